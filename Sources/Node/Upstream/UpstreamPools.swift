import NIOCore
import Synchronization

/// One pool per event loop, found from the loop a client connection runs on.
final class UpstreamPools: Sendable {
    private let pools: [ObjectIdentifier: LoopOwned<UpstreamPool>]
    /// Told when a worker that answered HTTP/2 refused it on a later connection (its calls go
    /// on over HTTP/1.1 on every loop from then on). A struct, not a bare closure, in the Mutex
    /// (WakerTests: a bare one is re-wrapped by every read).
    private struct RefusalListener: Sendable { let told: @Sendable (WorkerURL) -> Void }
    private let http2Refused = Mutex<RefusalListener?>(nil)

    init(group: any EventLoopGroup, metrics: RouterMetrics, tls: TLSContexts? = nil, idleTimeout: TimeAmount? = nil, connector: UpstreamPool.Connector? = nil) {
        var p: [ObjectIdentifier: LoopOwned<UpstreamPool>] = [:]
        for loop in group.makeIterator() {
            p[ObjectIdentifier(loop)] = LoopOwned(UpstreamPool(loop: loop, metrics: metrics, tls: tls, idleTimeout: idleTimeout, connector: connector), on: loop)
        }
        pools = p
        for bound in pools.values {
            bound.eventLoop.execute { [self] in
                // Weak: the pools own this pool, and a router's pools go with it.
                bound.value.http2Refused = { [weak self] url in
                    guard let self else { return }
                    setHTTP2(url, false)
                    http2Refused.withLock { $0 }?.told(url)
                }
            }
        }
    }

    /// Tells every loop that `url` speaks HTTP/2 (calls to it become streams), or not.
    func setHTTP2(_ url: WorkerURL, _ on: Bool) {
        for bound in pools.values {
            bound.eventLoop.execute { bound.value.setHTTP2(url, on) }
        }
    }

    func onHTTP2Refused(_ handler: @escaping @Sendable (WorkerURL) -> Void) { http2Refused.withLock { $0 = RefusalListener(told: handler) } }

    /// The pool of `loop`; must be called on that loop.
    func pool(for loop: any EventLoop) -> UpstreamPool {
        guard let p = pools[ObjectIdentifier(loop)] else { preconditionFailure("no upstream pool for this event loop") }
        return p.value
    }

    var loops: [any EventLoop] { pools.values.map(\.eventLoop) }

    /// Closes idle connections on every loop: to `url` (a worker removed), or all (shutdown).
    func closeIdle(to url: WorkerURL? = nil) {
        for bound in pools.values {
            bound.eventLoop.execute { bound.value.closeIdle(to: url) }
        }
    }
}
