/// What a worker's engine says about its own load (SGLang's `GET /v1/loads`): one record per
/// data-parallel rank. The router cannot see a worker's queue or its KV cache from its own
/// in-flight counts: other routers and clients share the worker, and a long prompt fills the
/// cache without adding a request.
public struct EngineLoad: Sendable, Equatable {
    public struct Rank: Sendable, Equatable {
        public var rank: Int
        /// Requests the engine is running (in its batch).
        public var running: Int
        /// Requests queued behind them.
        public var waiting: Int
        /// KV-cache token usage, 0...1; nil when the rank does not report it.
        public var tokenUsage: Double?
        /// Generated tokens per second; nil when not reported.
        public var throughput: Double?

        public init(rank: Int, running: Int, waiting: Int, tokenUsage: Double? = nil, throughput: Double? = nil) {
            self.rank = rank
            self.running = running
            self.waiting = waiting
            self.tokenUsage = tokenUsage
            self.throughput = throughput
        }
    }

    public var ranks: [Rank]

    public init(ranks: [Rank]) { self.ranks = ranks }

    /// Queued requests summed over the ranks: the signal overload protection compares.
    public var waiting: Int { ranks.reduce(0) { $0 &+ $1.waiting } }
    public var running: Int { ranks.reduce(0) { $0 &+ $1.running } }
    /// Mean KV-cache usage over the ranks that report one; nil when none does.
    public var tokenUsage: Double? {
        let reported = ranks.compactMap(\.tokenUsage)
        return reported.isEmpty ? nil : reported.reduce(0, +) / Double(reported.count)
    }
}

/// When a worker counts as overloaded: its queue or its KV cache at or above a threshold. Both
/// comparisons are inclusive, which is why neither threshold may be zero (it would veto every
/// worker).
public struct OverloadThresholds: Sendable, Equatable {
    /// Waiting requests summed over ranks (`--worker-overload-waiting-requests`, at least 1).
    public var waitingRequests: Int
    /// Mean KV-cache usage (`--worker-overload-token-usage`, in (0, 1]).
    public var tokenUsage: Double

    public init(waitingRequests: Int = 8, tokenUsage: Double = 0.8) {
        self.waitingRequests = waitingRequests
        self.tokenUsage = tokenUsage
    }

    public func isOverloaded(_ load: EngineLoad) -> Bool {
        load.waiting >= waitingRequests || (load.tokenUsage.map { $0 >= tokenUsage } ?? false)
    }
}

/// Worker overload protection for one routing decision: overloaded workers are left out while
/// another usable worker is under the thresholds. When every usable worker is over them, the
/// request is shed (`shed`) or goes to the least loaded of them.
public enum OverloadScreen: Equatable {
    /// No usable candidate is overloaded: route as the policy likes.
    case unaffected
    /// Leave these candidates out; the others are under the thresholds.
    case exclude([Int])
    /// Every usable candidate is overloaded and shedding is on: refuse the request.
    case shed
    /// Every usable candidate is overloaded: route to this one, the least loaded of them.
    case fallback(Int)

    /// One candidate as the screen sees it: whether it may serve at all (healthy, breaker,
    /// not avoided), and its engine's load when a fresh report says it is overloaded.
    public struct Candidate: Equatable {
        public var usable: Bool
        /// The fresh report that made it overloaded; nil: not overloaded (or no fresh report).
        public var overload: EngineLoad?
        public init(usable: Bool, overload: EngineLoad?) {
            self.usable = usable
            self.overload = overload
        }
    }

    /// Decides for `candidates`, in order. The least loaded is the one with the shortest queue,
    /// then the lowest KV usage, then the first.
    public static func decide(_ candidates: [Candidate], shed: Bool) -> OverloadScreen {
        let usable = candidates.indices.filter { candidates[$0].usable }
        let over = usable.filter { candidates[$0].overload != nil }
        if over.isEmpty { return .unaffected }
        if over.count < usable.count { return .exclude(over) }
        if shed { return .shed }
        func key(_ i: Int) -> (Int, Double) {
            let load = candidates[i].overload!
            return (load.waiting, load.tokenUsage ?? 0)
        }
        return .fallback(over.min { key($0) < key($1) }!)
    }
}
