/// What one routing decision leaves out before a policy chooses, and what it does when that is
/// everyone. Two kinds of worker are left out while another usable worker is neither:
///
/// - one that is not alive as a server of requests (`Liveness`: wedged, or stalled), and
/// - among the alive, one whose engine reports a queue or a KV cache over the thresholds
///   (overload protection).
///
/// When every usable worker is not alive, the request goes to the least loaded of them (by the
/// router's in-flight count): the liveness verdict is a guess from silence, and a guess must not
/// turn a fleet away. When every alive one is overloaded, it goes to the least loaded (shortest
/// queue, then lowest KV usage), or is shed.
public struct RoutingScreen: Equatable {
    /// One candidate as the screen sees it.
    public struct Candidate: Equatable {
        /// Healthy, allowed by its breaker, not avoided: it may serve at all.
        public var usable: Bool
        /// Not wedged or stalled (`Liveness.admits`).
        public var alive: Bool
        /// The fresh report that makes it overloaded; nil: not overloaded (or no fresh report).
        public var overload: EngineLoad?
        /// The router's requests in flight to it (the liveness fallback's measure).
        public var inFlight: Int
        public init(usable: Bool, alive: Bool = true, overload: EngineLoad? = nil, inFlight: Int = 0) {
            self.usable = usable
            self.alive = alive
            self.overload = overload
            self.inFlight = inFlight
        }
    }

    public enum Outcome: Equatable {
        /// Route among the candidates not in `excluded`.
        case route
        /// Every usable candidate was not alive: route to this one only.
        case livenessFallback(Int)
        /// Every alive candidate was overloaded: route to this one only.
        case overloadFallback(Int)
        /// Every alive candidate was overloaded and shedding is on: refuse the request.
        case shed
    }

    /// Usable candidates to leave out (with `.route`).
    public var excluded: [Int]
    public var outcome: Outcome

    public init(excluded: [Int] = [], _ outcome: Outcome = .route) {
        self.excluded = excluded
        self.outcome = outcome
    }

    /// Decides for `candidates`, in order; ties go to the first.
    public static func decide(_ candidates: [Candidate], shed: Bool) -> RoutingScreen {
        let usable = candidates.indices.filter { candidates[$0].usable }
        let alive = usable.filter { candidates[$0].alive }
        if alive.isEmpty {
            guard let least = usable.min(by: { candidates[$0].inFlight < candidates[$1].inFlight }) else { return RoutingScreen() }
            return RoutingScreen(.livenessFallback(least))
        }
        let dead = usable.filter { !candidates[$0].alive }
        let over = alive.filter { candidates[$0].overload != nil }
        if over.count < alive.count { return RoutingScreen(excluded: dead + over) }
        if shed { return RoutingScreen(.shed) }
        func key(_ i: Int) -> (Int, Double) {
            let load = candidates[i].overload ?? EngineLoad(ranks: [])
            return (load.waiting, load.tokenUsage ?? 0)
        }
        return RoutingScreen(.overloadFallback(over.min { key($0) < key($1) } ?? over[0]))
    }
}
