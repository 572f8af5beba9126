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
