import NIOCore
import Synchronization

/// Learns what a new worker does not say at registration: its model from its `/v1/models`,
/// and with `--dp-aware` its data-parallel ranks from `/get_server_info` (`dp_size`, asked with
/// the worker's API key or `--api-key`). It asks again with backoff (1, 2, 4 … 30 s) while the
/// worker is registered and has not answered (it may not be up yet). Workers wait in a list that
/// one periodic tick works through, so shutdown stops discovery with it.
final class ModelDiscovery: Sendable {
    private struct Pending {
        let worker: Worker
        var attempt = 0
        var dueMs: UInt64 = 0
        var asking = false
    }

    private let pending = Mutex<[String: Pending]>([:])
    private let clock: @Sendable () -> UInt64
    private let waker = PeriodicTask.Waker()

    init(clock: @escaping @Sendable () -> UInt64) { self.clock = clock }

    /// Asks `worker` for its model at the next tick.
    func discover(_ worker: Worker) {
        pending.withLock { $0[worker.id] = Pending(worker: worker) }
        waker.wake()
    }

    /// The tick as a service on the first event loop.
    func service(_ watch: WorkerWatch) -> PeriodicTask? {
        guard let loop = watch.pools.loops.first else { return nil }
        let pools = watch.pools
        // Every 250 ms while a worker waits for its model; otherwise asleep until `discover`
        // wakes it (a minute at most).
        return PeriodicTask("model discovery", on: loop, waker: waker) { [self] in
            tick(pool: pools.pool(for: loop), watch: watch)
            return pending.withLock { $0.isEmpty } ? .seconds(60) : .milliseconds(250)
        }
    }

    private func tick(pool: UpstreamPool, watch: WorkerWatch) {
        let now = clock()
        let due: [Worker] = pending.withLock { p in
            var due: [Worker] = []
            for (id, var entry) in p where !entry.asking && entry.dueMs <= now {
                // Removed meanwhile: nothing left to learn.
                guard watch.registry.worker(id: id) === entry.worker else { p[id] = nil; continue }
                entry.asking = true
                p[id] = entry
                due.append(entry.worker)
            }
            return due
        }
        for worker in due {
            if worker.modelID != nil {
                guard watch.config.dpAware else {
                    pending.withLock { _ = $0.removeValue(forKey: worker.id) }
                    continue
                }
                askRanks(worker, pool: pool, watch: watch)
                continue
            }
            UpstreamFetch.run(pool: pool, url: worker.url, method: .GET, path: "/v1/models", timeout: .seconds(5)) { [self] result in
                if case .success(let r) = result, r.status == .ok, let answer = Self.modelID(fromModels: r.body) {
                    let id: String
                    switch answer {
                    case .success(let m): id = m
                    case .failure(let refused):
                        watch.logger.warning("worker model id refused", metadata: ["worker": "\(worker.url.canonical)", "reason": "\(refused.reason)"])
                        return retryLater(worker, watch: watch)
                    }
                    worker.setModelID(id)
                    watch.logger.info("worker model discovered", metadata: ["worker": "\(worker.url.canonical)", "model": "\(id)"])
                    return askedAgainNow(worker)
                }
                retryLater(worker, watch: watch)
            }
        }
    }

    /// The model is known: the next tick moves on to what is still missing.
    private func askedAgainNow(_ worker: Worker) {
        pending.withLock { p in
            p[worker.id]?.asking = false
            p[worker.id]?.dueMs = 0
        }
    }

    private func askRanks(_ worker: Worker, pool: UpstreamPool, watch: WorkerWatch) {
        UpstreamFetch.run(pool: pool, url: worker.url, method: .GET, path: "/get_server_info", bearer: worker.apiKey ?? watch.config.apiKey,
                          timeout: .seconds(5)) { [self] result in
            if case .success(let r) = result, r.status == .ok, let answer = Self.dpSize(fromServerInfo: r.body) {
                let ranks: Int
                switch answer {
                case .success(let n): ranks = n
                case .failure(let refused):
                    // Out of bounds: the worker is not routed to (it would cost a rank table of
                    // that size), and asked again later in case it was restarted right.
                    if worker.refusal == nil {
                        watch.logger.error("worker refused: it reports an impossible number of data-parallel ranks", metadata: [
                            "worker": "\(worker.url.canonical)", "reason": "\(refused.reason)"])
                    }
                    worker.refuse(because: refused.reason)
                    return retryLater(worker, watch: watch)
                }
                worker.setDPSize(ranks)
                if worker.refusal != nil {
                    worker.refuse(because: nil)
                    watch.logger.info("worker accepted again", metadata: ["worker": "\(worker.url.canonical)"])
                }
                pending.withLock { _ = $0.removeValue(forKey: worker.id) }
                watch.logger.info("worker data-parallel ranks", metadata: ["worker": "\(worker.url.canonical)", "dp_size": "\(ranks)"])
                return
            }
            retryLater(worker, watch: watch)
        }
    }

    /// Why a worker's description of itself is refused.
    struct Refused: Error { let reason: String }

    /// The model a worker's `/v1/models` answer names (its first model), checked as an
    /// admin-given id is; nil when the answer is not a model list.
    static func modelID(fromModels body: ByteBuffer) -> Result<String, Refused>? {
        guard let id = JSONValue.parse(body.readableBytesView)?["data"]?.array?.first?["id"]?.string else { return nil }
        // It becomes a header value, a metric label and a policy: the same checks as a flag's.
        if let problem = WorkerFields.problem(model: id, labels: nil, apiKey: nil) { return .failure(Refused(reason: problem)) }
        return .success(id)
    }

    /// The data-parallel ranks a worker's `/get_server_info` answer reports (1 when it names
    /// none), refused outside 1...`Worker.maxDPSize`; nil when the answer is not JSON.
    static func dpSize(fromServerInfo body: ByteBuffer) -> Result<Int, Refused>? {
        guard let info = JSONValue.parse(body.readableBytesView) else { return nil }
        let reported = info["dp_size"]
        guard let ranks = reported == nil ? 1 : reported?.int, (1...Worker.maxDPSize).contains(ranks) else {
            return .failure(Refused(reason: "dp_size \(reported?.render().prefix(40) ?? "?") is not 1 to \(Worker.maxDPSize)"))
        }
        return .success(ranks)
    }

    private func retryLater(_ worker: Worker, watch: WorkerWatch) {
        let attempt: Int? = pending.withLock { p in
            guard var entry = p[worker.id] else { return nil }
            entry.attempt += 1
            entry.asking = false
            entry.dueMs = clock() + UInt64(min(30, 1 << min(entry.attempt - 1, 5))) * 1000
            p[worker.id] = entry
            return entry.attempt
        }
        if attempt == 3 {
            watch.logger.warning("worker not described yet; still asking it", metadata: [
                "worker": "\(worker.url.canonical)", "asking": "\(worker.modelID == nil ? "/v1/models" : "/get_server_info")"])
        }
    }
}
