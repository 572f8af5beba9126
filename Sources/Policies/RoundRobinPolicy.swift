/// Cycles through available workers in order. The cursor counts positions, so a worker that
/// becomes unavailable is skipped without disturbing the order of the others.
public struct RoundRobinPolicy: LoadBalancingPolicy {
    public let name = "round_robin"
    private var cursor = 0
    public init() {}

    public mutating func select<R: RandomNumberGenerator>(
        _ request: RoutingRequest, from workers: [WorkerCandidate], using rng: inout R
    ) -> Selection? {
        let n = workers.count
        guard n > 0 else { return nil }
        for step in 0..<n {
            let i = (cursor &+ step) % n
            if workers[i].isAvailable {
                cursor = (i + 1) % n
                return Selection(i, .roundRobin)
            }
        }
        return nil
    }
}
