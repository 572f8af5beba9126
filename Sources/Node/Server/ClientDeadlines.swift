import Logging
import NIOCore
import Synchronization

/// Every client connection's `ConnectionGuard`, per event loop, swept once a second: connections
/// over their deadline are closed, counted in `smg_http_connections_refused_total{reason}` and
/// logged (the first of each kind, then at most one line a minute with the count since).
final class ClientDeadlines: Sendable {
    enum Refusal: String, CaseIterable {
        case headerTimeout = "header_timeout"
        case bodyTimeout = "body_timeout"
        case bodyDeadline = "body_deadline"
        case idleTimeout = "idle_timeout"
        case maxConnections = "max_connections"
        case perClientLimit = "per_client_limit"

        /// Idle keep-alive connections expiring is routine: counted, not logged.
        var isLogged: Bool { self != .idleTimeout }
    }

    /// One loop's guards and its clock, touched only on that loop.
    final class LoopState {
        var tick: UInt32 = 0
        var guards: [ObjectIdentifier: ConnectionGuard] = [:]
    }

    private let loops: [ObjectIdentifier: LoopOwned<LoopState>]
    private let metrics: RouterMetrics
    private let logger: Logger
    private let log = Mutex<[Refusal: (lastLogged: UInt64, since: Int)]>([:])

    init(group: some EventLoopGroup, metrics: RouterMetrics, logger: Logger) {
        var l: [ObjectIdentifier: LoopOwned<LoopState>] = [:]
        for loop in group.makeIterator() { l[ObjectIdentifier(loop)] = LoopOwned(LoopState(), on: loop) }
        loops = l
        self.metrics = metrics
        self.logger = logger
    }

    /// The state of `loop`; on that loop only.
    func state(for loop: any EventLoop) -> LoopState {
        guard let s = loops[ObjectIdentifier(loop)] else { preconditionFailure("no client deadlines for this event loop") }
        return s.value
    }

    /// One tick on every loop: advance its clock and close what is overdue.
    func sweep(nowMs: UInt64) {
        for owned in loops.values {
            owned.eventLoop.execute {
                let state = owned.value
                state.tick &+= 1
                for g in state.guards.values {
                    guard let reason = g.overdue(at: state.tick) else { continue }
                    state.guards[ObjectIdentifier(g)] = nil
                    g.close()
                    self.refused(reason, nowMs: nowMs)
                }
            }
        }
    }

    /// Counts a refusal and logs it, rate-limited per kind.
    func refused(_ reason: Refusal, nowMs: UInt64) {
        metrics.connectionRefused(reason: reason.rawValue)
        guard reason.isLogged else { return }
        let line: Int? = log.withLock { log in
            var entry = log[reason] ?? (lastLogged: 0, since: 0)
            entry.since += 1
            defer { log[reason] = entry }
            guard entry.lastLogged == 0 || nowMs &- entry.lastLogged >= 60_000 else { return nil }
            let count = entry.since
            entry = (lastLogged: max(nowMs, 1), since: 0)
            return count
        }
        if let count = line {
            logger.warning("client connections closed", metadata: ["reason": "\(reason.rawValue)", "count": "\(count)", "period": "since the last line of this kind (at most one a minute)"])
        }
    }
}
