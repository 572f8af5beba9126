/// `prefix_hash`: the first `prefixLength` bytes of the routing text (UTF-8 bytes stand in for
/// tokens over HTTP) are hashed onto a ring; the owner takes the request unless it already
/// carries more than `loadFactor` times the average load, in which case the next worker on the
/// ring that does not takes it (consistent hashing with bounded loads).
public struct PrefixHashPolicy: LoadBalancingPolicy {
    public let name = "prefix_hash"
    public let prefixLength: Int
    public let loadFactor: Double
    private var ring = RingCache()

    public init(prefixLength: Int = 256, loadFactor: Double = 1.25) {
        self.prefixLength = max(1, prefixLength)
        self.loadFactor = max(1, loadFactor)
    }

    public mutating func select<R: RandomNumberGenerator>(
        _ request: RoutingRequest, from workers: [WorkerCandidate], using rng: inout R
    ) -> Selection? {
        let available = workers.filter(\.isAvailable)
        guard !available.isEmpty else { return nil }
        let hash = PromptBlocks.hash(request.routingText.prefix(prefixLength))
        let order = ring.order(for: hash, workers: workers).filter { workers[$0].isAvailable }
        // Each worker may carry up to ceil(c × average), counting this request.
        let total = available.reduce(0) { $0 + $1.load } + 1
        let capacity = Int((loadFactor * Double(total) / Double(available.count)).rounded(.up))
        for (rank, i) in order.enumerated() where workers[i].load < capacity {
            return Selection(i, rank == 0 ? .hashRing : .boundedLoadSpill)
        }
        return RandomPolicy.leastLoaded(workers).map { Selection($0, .boundedLoadSpill) }
    }
}
