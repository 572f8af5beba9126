import Logging
import Reliability

/// What the services that watch workers (health checks, load polls, model discovery) need of a
/// router: its settings, its workers, the connection pools to ask them on, its metrics and log.
/// Narrower than `RouterState`, which holds these services' results, so the services sit below
/// it and the state does not depend on code that depends on the state.
struct WorkerWatch: Sendable {
    let config: RouterConfig
    let registry: WorkerRegistry
    let pools: UpstreamPools
    let metrics: RouterMetrics
    let logger: Logger
    /// Told each liveness verdict this router reaches on its own (the mesh tells the others).
    var livenessChanged: @Sendable (Worker, Liveness) -> Void = { _, _ in }
}
