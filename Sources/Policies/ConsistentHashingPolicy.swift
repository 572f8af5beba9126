/// `consistent_hashing`: `X-SMG-Routing-Key` on a ring with virtual nodes, so every turn of a
/// session lands on the same worker and adding or removing a worker moves ~1/N of the keys.
/// `X-SMG-Target-Worker: <index>` pins a request to that candidate when it is available.
/// Without a key the request goes to a random available worker (there is nothing to be
/// consistent about); an unavailable owner hands its keys to the next worker on the ring.
public struct ConsistentHashingPolicy: LoadBalancingPolicy {
    public let name = "consistent_hashing"
    private var ring = RingCache()
    public init() {}

    public mutating func select<R: RandomNumberGenerator>(
        _ request: RoutingRequest, from workers: [WorkerCandidate], using rng: inout R
    ) -> Selection? {
        if let pin = request.targetWorker, workers.indices.contains(pin), workers[pin].isAvailable {
            return Selection(pin, .pinned)
        }
        guard let key = request.routingKey, !key.isEmpty else {
            return RandomPolicy.randomAvailable(workers, using: &rng).map { Selection($0, .fallback) }
        }
        let hash = PromptBlocks.hash(key.utf8)
        return ring.order(for: hash, workers: workers).first { workers[$0].isAvailable }.map { Selection($0, .hashRing) }
    }
}
