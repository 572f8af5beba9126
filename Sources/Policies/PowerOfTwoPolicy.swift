/// Power of two choices: two distinct random available workers, the less loaded one wins.
/// Load is the worker's own report when it has one, else the router's in-flight count.
public struct PowerOfTwoPolicy: LoadBalancingPolicy {
    public let name = "power_of_two"
    public init() {}

    public mutating func select<R: RandomNumberGenerator>(
        _ request: RoutingRequest, from workers: [WorkerCandidate], using rng: inout R
    ) -> Selection? {
        let available = workers.indices.filter { workers[$0].isAvailable }
        switch available.count {
        case 0: return nil
        case 1: return Selection(available[0], .lessLoaded)
        default:
            let a = Int.random(in: 0..<available.count, using: &rng)
            var b = Int.random(in: 0..<(available.count - 1), using: &rng)
            if b >= a { b += 1 }
            let (x, y) = (available[a], available[b])
            return Selection(workers[y].load < workers[x].load ? y : x, .lessLoaded)
        }
    }
}
