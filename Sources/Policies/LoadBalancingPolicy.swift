/// A routing policy: a value that picks one of the candidate workers for a request.
///
/// Policies are pure. Randomness comes in as an argument so tests can seed it; state a policy
/// keeps between decisions (a round-robin cursor, later a radix tree) lives in the value, and
/// the router owns one value per model behind its own lock.
public protocol LoadBalancingPolicy: Sendable {
    /// The name operators use on the command line (`--policy round_robin`).
    var name: String { get }

    /// Returns the index in `workers` of the chosen worker, or nil when none is available.
    mutating func select<R: RandomNumberGenerator>(
        _ request: RoutingRequest, from workers: [WorkerCandidate], using rng: inout R
    ) -> Int?
}

/// Every policy name of the reference gateway, and whether this build implements it yet.
public enum PolicyName: String, CaseIterable, Sendable {
    case random, round_robin, power_of_two, cache_aware, prefix_hash, consistent_hashing, manual

    /// Builds the policy, or nil for one that is not built yet.
    public func make() -> (any LoadBalancingPolicy)? {
        switch self {
        case .random: return RandomPolicy()
        case .round_robin: return RoundRobinPolicy()
        default: return nil
        }
    }
}
