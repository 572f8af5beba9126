/// What a policy may know about one worker at the moment of a decision: a read-only value
/// taken from the router's registry. Policies never see sockets, clocks or the mesh.
public struct WorkerCandidate: Sendable, Equatable {
    /// Stable identity (the registry's worker id).
    public var id: String
    public var url: String
    /// Healthy and not draining: may receive new requests.
    public var isAvailable: Bool
    /// Requests the router has in flight to this worker right now.
    public var inFlight: Int
    /// The worker's own load report (`/get_load`), when it exposes one; preferred over `inFlight`.
    public var reportedLoad: Int?
    /// The KV-cache usage its engine last reported (0...1), while the report is fresh; set only
    /// for a policy that reads it (cache_aware's token-usage guards, the expected wait).
    public var tokenUsage: Double?
    /// From the same fresh report, for the expected wait (`LeastLoadPolicy`): the engine's
    /// waiting requests (nil: no fresh report), its generation throughput (tokens/s, nil or 0:
    /// not reported), and how many requests the router sent it since the report.
    public var reportedWaiting: Int?
    public var throughput: Double?
    public var sentSinceReport = 0

    public init(id: String, url: String, isAvailable: Bool = true, inFlight: Int = 0, reportedLoad: Int? = nil, tokenUsage: Double? = nil) {
        self.id = id
        self.url = url
        self.isAvailable = isAvailable
        self.inFlight = inFlight
        self.reportedLoad = reportedLoad
        self.tokenUsage = tokenUsage
    }

    /// The load a policy compares: the worker's report when there is one.
    public var load: Int { reportedLoad ?? inFlight }
}

/// What a policy may know about the request being routed.
public struct RoutingRequest: Sendable {
    /// The bytes that identify the prompt's prefix (chat message texts in order, the prompt,
    /// `text`, input ids as little-endian UInt32s, …); empty when the request has none.
    public var routingText: [UInt8]
    /// `X-SMG-Routing-Key`, if the client sent one.
    public var routingKey: String?
    /// `X-SMG-Target-Worker`: pin to the worker at this index of the candidates.
    public var targetWorker: Int?
    /// Monotonic milliseconds, from the router's clock: the only notion of time a policy gets.
    public var now: UInt64

    public init(routingText: [UInt8] = [], routingKey: String? = nil, targetWorker: Int? = nil, now: UInt64 = 0) {
        self.routingText = routingText
        self.routingKey = routingKey
        self.targetWorker = targetWorker
        self.now = now
    }
}

/// Why a policy chose what it chose: counted per policy in metrics.
public enum SelectionReason: String, Sendable, CaseIterable {
    case roundRobin = "round_robin"
    case random
    case lessLoaded = "less_loaded"
    case cacheHit = "cache_hit"
    case cacheMiss = "cache_miss"
    case imbalance
    case hashRing = "hash_ring"
    case boundedLoadSpill = "bounded_load_spill"
    case pinned
    case sticky
    case newAssignment = "new_assignment"
    /// least_load: the shortest expected wait.
    case expectedWait = "expected_wait"
    /// cache_aware: sent to a warming worker (new or thin) so it builds a cache.
    case warmup
    case reassigned
    case fallback
}

/// A policy's decision: the index of the chosen candidate and why. Two selections are equal when
/// they choose the same candidate for the same reason: the match ratio is a measurement taken on
/// the way, not part of the decision.
public struct Selection: Sendable, Equatable {
    public var index: Int
    public var reason: SelectionReason
    /// cache_aware: the longest cached prefix among available workers over the prompt's length
    /// (0...1), when the tree was consulted (metrics: `smg_cache_aware_match_ratio`).
    public var matchRatio: Double?
    public init(_ index: Int, _ reason: SelectionReason, matchRatio: Double? = nil) {
        self.index = index
        self.reason = reason
        self.matchRatio = matchRatio
    }

    public static func == (a: Selection, b: Selection) -> Bool { a.index == b.index && a.reason == b.reason }
}
