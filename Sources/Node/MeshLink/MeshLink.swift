import Logging
import Mesh
import NIOCore

/// The mesh as the rest of the router holds it (the router's types never name the mesh's):
/// the service, and with `cache_aware` the sync of routing decisions.
final class MeshLink: Sendable {
    let service: MeshService
    /// Ships cache-aware decisions to the other routers (nil for other policies).
    let treeSync: TreeSync?

    init(service: MeshService, registry: WorkerRegistry, config: RouterConfig, loop: (any EventLoop)?, logger: Logger) {
        self.service = service
        if config.policy == .cache_aware, let loop {
            treeSync = TreeSync(registry: registry, mesh: service, loop: loop, logger: logger, clock: MonotonicClock.nowMs)
        } else {
            treeSync = nil
        }
    }
}
