import Foundation
import NIOCore

/// Polls every worker's `GET /get_load` for `power_of_two`, which prefers a worker's own view
/// of its load (other clients, queued work) over the router's in-flight count. A worker that
/// does not answer falls back to the in-flight count.
enum LoadMonitor {
    static let interval = TimeAmount.seconds(5)

    static func start(state: RouterState) {
        guard let loop = state.pools.loops.first else { return }
        let pools = state.pools
        loop.scheduleRepeatedTask(initialDelay: .milliseconds(200), delay: interval) { _ in
            for worker in state.registry.all {
                UpstreamFetch.run(pool: pools.pool(for: loop), url: worker.url, method: .GET, path: "/get_load", timeout: .seconds(2)) { result in
                    guard case .success(let r) = result, r.status == .ok,
                          let obj = try? JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as? [String: Any],
                          let load = (obj["load"] as? Int) ?? (obj["num_reqs"] as? Int) else {
                        worker.setReportedLoad(nil)
                        return
                    }
                    worker.setReportedLoad(max(0, load))
                }
            }
        }
    }
}
