/// A routing policy: a value that picks one of the candidate workers for a request.
///
/// Policies are pure. Randomness and time come in as arguments so tests can fix them; state a
/// policy keeps between decisions (a round-robin cursor, a radix tree, sticky keys) lives in
/// the value, and the router owns one value per model behind its own lock.
public protocol LoadBalancingPolicy: Sendable {
    /// The name operators use on the command line (`--policy round_robin`).
    var name: String { get }

    /// Chooses among `workers` (only those with `isAvailable` may be chosen), or nil when none is.
    mutating func select<R: RandomNumberGenerator>(
        _ request: RoutingRequest, from workers: [WorkerCandidate], using rng: inout R
    ) -> Selection?

    /// Forgets everything about a removed worker (its tree entries, its sticky keys).
    mutating func removeWorker(id: String)

    /// Periodic upkeep (tree eviction, idle keys), at `now` in monotonic milliseconds.
    mutating func maintain(now: UInt64)

    /// Size of the policy's routing state, for metrics (tree elements, keys); 0 if stateless.
    var stateSize: Int { get }

    /// What this router decided since `version`, for other routers (cache_aware's tree
    /// summary); nil for policies with nothing to share. Returns the version to ask from next.
    func summary(since version: UInt64) -> (TreeDelta<UInt64, String>, UInt64)?

    /// Learns another router's decisions.
    mutating func apply(summary: TreeDelta<UInt64, String>)

    /// The next chunk of the whole routing state, for a router that just joined (cache_aware's
    /// tree; see `RadixTree.exportChunk`); policies with nothing to share finish the cursor at once.
    func exportChunk(
        after cursor: inout TreeExportCursor<UInt64>, maxPathLength: Int,
        begin: (_ ancestors: [ArraySlice<UInt64>]) -> Bool,
        accept: (_ depth: Int, _ label: ArraySlice<UInt64>, _ owners: [TreeStamp<String>]) -> Bool
    ) -> Int

    /// Learns a chunk of another router's whole state; false when it is malformed.
    mutating func apply(chunk: TreeChunk<UInt64, String>) -> Bool

    /// Adopts another router's sticky assignment of a routing key (manual); nil worker forgets it.
    mutating func adopt(routingKey: String, worker: String?, now: UInt64)
}

extension LoadBalancingPolicy {
    public mutating func removeWorker(id: String) {}
    public mutating func maintain(now: UInt64) {}
    public var stateSize: Int { 0 }
    public func summary(since version: UInt64) -> (TreeDelta<UInt64, String>, UInt64)? { nil }
    public mutating func apply(summary: TreeDelta<UInt64, String>) {}
    public func exportChunk(
        after cursor: inout TreeExportCursor<UInt64>, maxPathLength: Int,
        begin: (_ ancestors: [ArraySlice<UInt64>]) -> Bool,
        accept: (_ depth: Int, _ label: ArraySlice<UInt64>, _ owners: [TreeStamp<String>]) -> Bool
    ) -> Int {
        cursor.finish()
        return 0
    }
    public mutating func apply(chunk: TreeChunk<UInt64, String>) -> Bool { true }
    public mutating func adopt(routingKey: String, worker: String?, now: UInt64) {}
}

/// Every policy name of the reference gateway.
public enum PolicyName: String, CaseIterable, Sendable {
    case random, round_robin, power_of_two, least_load, cache_aware, prefix_hash, consistent_hashing, manual

    /// Whether the policy reads the engines' reports beyond their load (waiting, throughput, KV
    /// usage): only then are candidates given them.
    public func readsEngineSignals(_ config: PolicyConfig) -> Bool {
        switch self {
        case .least_load: true
        case .power_of_two: config.powerOfTwoMetric == .expected_wait
        case .cache_aware: config.cacheAware.readsTokenUsage
        default: false
        }
    }

    public func make(_ config: PolicyConfig = PolicyConfig()) -> any LoadBalancingPolicy {
        switch self {
        case .random: return RandomPolicy()
        case .round_robin: return RoundRobinPolicy()
        case .power_of_two: return PowerOfTwoPolicy(metric: config.powerOfTwoMetric, leastLoad: config.leastLoad)
        case .least_load: return LeastLoadPolicy(config.leastLoad)
        case .cache_aware:
            var c = config.cacheAware
            c.recordsSummaries = c.recordsSummaries || config.sharesState
            return CacheAwarePolicy(c)
        case .prefix_hash: return PrefixHashPolicy(prefixLength: config.prefixTokenCount, loadFactor: config.prefixHashLoadFactor)
        case .consistent_hashing: return ConsistentHashingPolicy()
        case .manual: return ManualPolicy(mode: config.assignmentMode, maxIdleMs: config.maxIdleSecs * 1000)
        }
    }
}

/// The knobs of every policy, from the command line (the gateway's documented defaults).
public struct PolicyConfig: Sendable, Equatable {
    public var cacheAware = CacheAwareConfig()
    public var leastLoad = LeastLoadConfig()
    public var powerOfTwoMetric = PowerOfTwoMetric.expected_wait
    public var prefixTokenCount = 256
    public var prefixHashLoadFactor = 1.25
    public var assignmentMode = AssignmentMode.random
    public var maxIdleSecs: UInt64 = 14_400
    /// Keep what other routers need (cache_aware's decision log): on with the mesh.
    public var sharesState = false
    public init() {}
}

/// Seed 002's PD policy inheritance: a specific `--prefill-policy`/`--decode-policy` wins,
/// otherwise each side uses `--policy`.
public func resolvePDPolicies(policy: PolicyName, prefill: PolicyName?, decode: PolicyName?) -> (prefill: PolicyName, decode: PolicyName) {
    (prefill ?? policy, decode ?? policy)
}
