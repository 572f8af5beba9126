import Mesh
import ServiceLifecycle

/// This router's membership of the mesh as a service. The mesh port is bound when the router
/// starts (so a taken port fails the start); graceful shutdown leaves the mesh first of all —
/// readiness turns 503 and peers see a graceful leave at once, not a failure seconds later —
/// and stops the protocol timer.
struct MeshMembership: Service, CustomStringConvertible {
    let mesh: MeshService
    let state: RouterState
    var description: String { "mesh membership" }

    func run() async throws {
        try? await gracefulShutdown()
        state.startDraining()
        await mesh.leave()
    }
}
