import Mesh
import ServiceLifecycle

/// This router's membership of the mesh as a service. The mesh port is bound when the router
/// starts (so a taken port fails the start); the protocol timer runs while this service does:
/// started when the group runs, and stopped by graceful shutdown, which leaves the mesh first of
/// all (readiness turns 503 and peers see a graceful leave at once, not a failure seconds later).
struct MeshMembership: Service, CustomStringConvertible {
    let mesh: MeshService
    let state: RouterState
    var description: String { "mesh membership" }

    func run() async throws {
        mesh.startTicking()
        try? await gracefulShutdown()
        state.startDraining()
        await mesh.leave()
    }
}
