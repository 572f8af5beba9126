import NIOCore

/// Polls every worker's `GET /get_load` for `power_of_two`, which prefers a worker's own view
/// of its load (other clients, queued work) over the router's in-flight count. A worker that
/// does not answer falls back to the in-flight count.
enum LoadMonitor {
    static let interval = TimeAmount.seconds(5)

    static func service(_ watch: WorkerWatch) -> PeriodicTask? {
        guard let loop = watch.pools.loops.first else { return nil }
        let pools = watch.pools
        return PeriodicTask("load monitor", on: loop, initialDelay: .milliseconds(200), every: interval) {
            for worker in watch.registry.all {
                UpstreamFetch.run(pool: pools.pool(for: loop), url: worker.url, method: .GET, path: "/get_load", timeout: .seconds(2)) { result in
                    // No answer, or none with a load: fall back to the in-flight count.
                    worker.setReportedLoad((try? result.get()).flatMap(reportedLoad)?.int.map { max(0, $0) })
                }
            }
        }
    }

    /// The load a worker reports in its `GET /get_load` answer (`load`, else `num_reqs`), as sent.
    static func reportedLoad(_ r: UpstreamFetch.Response) -> JSONValue? {
        guard r.status == .ok, let answer = JSONValue.parse(r.body.readableBytesView) else { return nil }
        return answer["load"] ?? answer["num_reqs"]
    }
}
