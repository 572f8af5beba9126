/// Uniformly random among available workers.
public struct RandomPolicy: LoadBalancingPolicy {
    public let name = "random"
    public init() {}

    public mutating func select<R: RandomNumberGenerator>(
        _ request: RoutingRequest, from workers: [WorkerCandidate], using rng: inout R
    ) -> Selection? {
        Self.randomAvailable(workers, using: &rng).map { Selection($0, .random) }
    }

    /// A uniformly random available index, or nil.
    static func randomAvailable<R: RandomNumberGenerator>(_ workers: [WorkerCandidate], using rng: inout R) -> Int? {
        var available = 0
        for w in workers where w.isAvailable { available += 1 }
        guard available > 0 else { return nil }
        var pick = Int.random(in: 0..<available, using: &rng)
        for (i, w) in workers.enumerated() where w.isAvailable {
            if pick == 0 { return i }
            pick -= 1
        }
        return nil
    }

    /// The available index with the lowest load (first on ties), or nil.
    static func leastLoaded(_ workers: [WorkerCandidate]) -> Int? {
        var best: Int?
        for (i, w) in workers.enumerated() where w.isAvailable {
            if best == nil || w.load < workers[best!].load { best = i }
        }
        return best
    }
}
