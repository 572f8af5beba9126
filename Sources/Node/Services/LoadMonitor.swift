import NIOCore
import Reliability

/// Polls every worker's engine for its own view of its load: `GET /v1/loads?include=core`
/// (SGLang: per data-parallel rank, requests running and waiting and KV-cache usage), and
/// `GET /get_load` of a worker that has no `/v1/loads` (404). What it learns is kept on the
/// worker: overload protection reads the verdict; the load-aware policies (`power_of_two`,
/// `least_load`, cache_aware's KV guards) the load, queue, throughput and KV usage; metrics all.
///
/// A worker that does not answer keeps its last report only until the report's lifetime ends
/// (`WorkerLoadSettings.reportLifetimeMs`): a stale report keeps no worker out for good.
enum LoadMonitor {
    /// The poll as a service on one loop; nil when nothing reads the reports and
    /// `--disable-load-monitoring` asks to poll only then.
    static func service(_ watch: WorkerWatch) -> PeriodicTask? {
        let config = watch.config
        let settings = config.workerLoad
        let loadAware = ([config.policy] + [config.pd?.prefillPolicy, config.pd?.decodePolicy].compactMap { $0 })
            .contains { $0 == .power_of_two || $0.readsEngineSignals(config.policyConfig) }
        guard !settings.pollOnlyWhenNeeded || settings.overload != nil || loadAware, let loop = watch.pools.loops.first else { return nil }
        // A worker added is asked at once: an overloaded one must not take traffic for a whole interval.
        watch.registry.onAdded { worker in loop.execute { poll(worker, watch: watch, on: loop) } }
        return PeriodicTask("load monitor", on: loop, initialDelay: .milliseconds(200), every: .seconds(Int64(settings.monitorIntervalSecs))) {
            for worker in watch.registry.all { poll(worker, watch: watch, on: loop) }
        }
    }

    /// One poll of one worker; it ends before the next (its timeout is below the interval).
    static func poll(_ worker: Worker, watch: WorkerWatch, on loop: any EventLoop) {
        let settings = watch.config.workerLoad
        let timeout = TimeAmount.milliseconds(Int64(min(2_000, settings.monitorIntervalSecs * 1000)))
        let pool = watch.pools.pool(for: loop)
        let bearer = worker.apiKey ?? watch.config.apiKey
        watch.metrics.engineLoadPoll(worker: worker.url.canonical)
        UpstreamFetch.run(pool: pool, url: worker.url, method: .GET, path: "/v1/loads?include=core", bearer: bearer, timeout: timeout) { result in
            // Any answer is contact; none at all after silence stalls the worker (`Liveness`).
            if case .failure = result {
                LivenessWatch.transportFailed(worker, now: MonotonicClock.nowMs(), watch: watch)
            } else {
                LivenessWatch.contacted(worker, now: MonotonicClock.nowMs(), watch: watch)
            }
            switch result {
            case .success(let r) where r.status == .ok:
                guard let load = engineLoad(fromLoads: r.body) else { return worker.setReportedLoad(nil) }
                let now = MonotonicClock.nowMs()
                worker.recordEngineLoad(load, atMs: now, freshUntilMs: now + settings.reportLifetimeMs,
                                        overloaded: settings.overload.map { $0.isOverloaded(load) } ?? false)
            case .success(let r) where r.status == .notFound:
                // An engine without /v1/loads: its /get_load load for the load-aware policies, no overload verdict.
                UpstreamFetch.run(pool: pool, url: worker.url, method: .GET, path: "/get_load", bearer: bearer, timeout: timeout) { result in
                    worker.setReportedLoad((try? result.get()).flatMap(reportedLoad)?.int.map { max(0, $0) })
                }
            default:
                // No answer: the load-aware policies fall back to the in-flight count; the last
                // report counts until its lifetime ends.
                worker.setReportedLoad(nil)
            }
        }
    }

    /// The most ranks a `/v1/loads` answer may list: as many as a worker may have.
    static let maxRanks = Worker.maxDPSize
    /// Counts above this are taken as this: no worker queues a billion requests, and sums stay far from overflow.
    static let maxCount = 1 << 30

    /// The engine's load from a `/v1/loads` answer: `loads`, one object per rank, with
    /// `num_running_reqs`, `num_waiting_reqs` (whole numbers from 0), `token_usage` (0...1,
    /// optional) and `gen_throughput` (optional). nil when the answer is not of that shape: a
    /// worker that sends garbage is judged by the router's own counts, as one that sends nothing.
    static func engineLoad(fromLoads body: ByteBuffer) -> EngineLoad? {
        guard let answer = JSONValue.parse(body.readableBytesView), let list = answer["loads"]?.array,
              (1...maxRanks).contains(list.count) else { return nil }
        var ranks: [EngineLoad.Rank] = []
        ranks.reserveCapacity(list.count)
        for (i, entry) in list.enumerated() {
            guard entry.object != nil else { return nil }
            func count(_ key: String) -> Int?? {
                guard let v = entry[key] else { return .some(nil) }
                guard let n = v.number, n >= 0, n == n.rounded() else { return nil }
                return .some(n >= Double(maxCount) ? maxCount : Int(n))
            }
            guard let running = count("num_running_reqs"), let waiting = count("num_waiting_reqs"), let rank = count("dp_rank") else { return nil }
            let usage = entry["token_usage"]?.number
            if let usage, !(0...1).contains(usage) { return nil }
            let throughput = entry["gen_throughput"]?.number
            if let throughput, throughput < 0 { return nil }
            ranks.append(EngineLoad.Rank(rank: min(rank ?? i, maxRanks), running: running ?? 0, waiting: waiting ?? 0, tokenUsage: usage, throughput: throughput))
        }
        return EngineLoad(ranks: ranks)
    }

    /// The load a worker reports in its `GET /get_load` answer (`load`, else `num_reqs`), as sent.
    static func reportedLoad(_ r: UpstreamFetch.Response) -> JSONValue? {
        guard r.status == .ok, let answer = JSONValue.parse(r.body.readableBytesView) else { return nil }
        return answer["load"] ?? answer["num_reqs"]
    }
}
