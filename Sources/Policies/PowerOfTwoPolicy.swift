/// Power of two choices: two distinct random available workers, the one with less load wins;
/// what counts as load is `metric` (`--power-of-two-load-metric`): the expected wait
/// (`LeastLoadPolicy.expectedWait`, the default), the worker's own report of its requests
/// (else the router's in-flight count), or the routers' in-flight count alone.
public struct PowerOfTwoPolicy: LoadBalancingPolicy {
    public let name = "power_of_two"
    public let metric: PowerOfTwoMetric
    public let leastLoad: LeastLoadConfig
    public init(metric: PowerOfTwoMetric = .expected_wait, leastLoad: LeastLoadConfig = LeastLoadConfig()) {
        self.metric = metric
        self.leastLoad = leastLoad
    }

    func less(_ a: WorkerCandidate, than b: WorkerCandidate) -> Bool {
        switch metric {
        case .expected_wait: LeastLoadPolicy.expectedWait(a, leastLoad) < LeastLoadPolicy.expectedWait(b, leastLoad)
        case .requests: a.load < b.load
        case .least_requests: a.inFlight < b.inFlight
        }
    }

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
            return Selection(less(workers[y], than: workers[x]) ? y : x, .lessLoaded)
        }
    }
}
