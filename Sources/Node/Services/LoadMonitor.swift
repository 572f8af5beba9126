import NIOCore

/// Polls every worker's `GET /get_load` for `power_of_two`, which prefers a worker's own view
/// of its load (other clients, queued work) over the router's in-flight count. A worker that
/// does not answer falls back to the in-flight count.
enum LoadMonitor {
    static let interval = TimeAmount.seconds(5)

    static func service(state: RouterState) -> PeriodicTask? {
        guard let loop = state.pools.loops.first else { return nil }
        let pools = state.pools
        return PeriodicTask("load monitor", on: loop, initialDelay: .milliseconds(200), every: interval) {
            for worker in state.registry.all {
                UpstreamFetch.run(pool: pools.pool(for: loop), url: worker.url, method: .GET, path: "/get_load", timeout: .seconds(2)) { result in
                    // No answer, or none with a load: fall back to the in-flight count.
                    worker.setReportedLoad((try? result.get()).flatMap(FleetRoutes.workerLoad)?.int.map { max(0, $0) })
                }
            }
        }
    }
}
