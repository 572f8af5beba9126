import NIOCore
import ServiceLifecycle

/// The API listener (`--host`, `--port`) as a service. Graceful shutdown (SIGTERM, SIGINT) is
/// the drain: `/readiness` turns 503, the listener closes, requests in flight (streams too)
/// get up to `--shutdown-grace-period-secs`, then every connection is closed.
///
/// After an in-place upgrade's handover the drain lasts at least `handoverLinger` (1 s): a client
/// whose connection this router accepted just before its listener closed sends its request in
/// that time and is answered (with `connection: close`), instead of finding the connection
/// closed under it because nothing was in flight at that instant.
struct APIServer: Service, CustomStringConvertible {
    let channel: any Channel
    let connections: ConnectionTracker
    let state: RouterState
    let gracePeriod: Duration
    static let handoverLinger: Duration = .seconds(1)
    var description: String { "api server" }

    func run() async throws {
        try? await gracefulShutdown()
        state.startDraining()
        state.logger.info("shutting down: draining in-flight requests", metadata: ["in_flight": "\(state.inFlight)", "grace_secs": "\(gracePeriod.components.seconds)"])
        try? await channel.close()
        let clock = ContinuousClock()
        let deadline = clock.now + gracePeriod
        let lingerUntil = clock.now + (state.handedOver ? Self.handoverLinger : .zero)
        while state.inFlight > 0 || clock.now < lingerUntil, clock.now < deadline, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let left = state.inFlight
        if left > 0 { state.logger.warning("grace period over: closing requests still in flight", metadata: ["in_flight": "\(left)"]) }
        connections.closeAll()
    }
}
