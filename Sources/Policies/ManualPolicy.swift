/// How `manual` places a routing key it has not seen.
public enum AssignmentMode: String, Sendable, CaseIterable {
    case random, min_load, min_group
}

/// `manual`: sticky assignment of `X-SMG-Routing-Key` values to workers. A new key is placed by
/// the assignment mode (random, least loaded, or the worker with the fewest keys); a key whose
/// worker is gone or unavailable is placed again; keys idle longer than `maxIdleMs` are
/// forgotten by `maintain`. Requests without a key go to a random available worker.
public struct ManualPolicy: LoadBalancingPolicy {
    public let name = "manual"
    public let mode: AssignmentMode
    public let maxIdleMs: UInt64
    /// Bound on remembered keys, whatever clients send: beyond it the least recently used go.
    public let maxKeys: Int
    private var assignments: [String: (worker: String, lastUse: UInt64)] = [:]
    private var keysPerWorker: [String: Int] = [:]

    public init(mode: AssignmentMode = .random, maxIdleMs: UInt64 = 14_400_000, maxKeys: Int = 1_000_000) {
        self.mode = mode
        self.maxIdleMs = maxIdleMs
        self.maxKeys = max(1, maxKeys)
    }

    public var stateSize: Int { assignments.count }

    /// Keys longer than this are remembered by their hash, so odd clients cannot blow up memory.
    public static func normalize(_ key: String) -> String {
        key.utf8.count <= 256 ? key : "#" + String(PromptBlocks.hash(key.utf8), radix: 16)
    }

    public mutating func select<R: RandomNumberGenerator>(
        _ request: RoutingRequest, from workers: [WorkerCandidate], using rng: inout R
    ) -> Selection? {
        guard let raw = request.routingKey, !raw.isEmpty else {
            return RandomPolicy.randomAvailable(workers, using: &rng).map { Selection($0, .fallback) }
        }
        let key = Self.normalize(raw)
        var reason = SelectionReason.newAssignment
        if let current = assignments[key] {
            if let i = workers.firstIndex(where: { $0.id == current.worker }), workers[i].isAvailable {
                assignments[key] = (current.worker, request.now)
                return Selection(i, .sticky)
            }
            reason = .reassigned
            unassign(key)
        }
        let choice: Int?
        switch mode {
        case .random: choice = RandomPolicy.randomAvailable(workers, using: &rng)
        case .min_load: choice = RandomPolicy.leastLoaded(workers)
        case .min_group:
            choice = workers.indices.filter { workers[$0].isAvailable }.min { a, b in
                (keysPerWorker[workers[a].id] ?? 0, workers[a].load) < (keysPerWorker[workers[b].id] ?? 0, workers[b].load)
            }
        }
        guard let i = choice else { return nil }
        assignments[key] = (workers[i].id, request.now)
        keysPerWorker[workers[i].id, default: 0] += 1
        if assignments.count > maxKeys { dropLeastRecentlyUsed(assignments.count - maxKeys * 9 / 10) }
        return Selection(i, reason)
    }

    private mutating func unassign(_ key: String) {
        guard let old = assignments.removeValue(forKey: key) else { return }
        keysPerWorker[old.worker, default: 1] -= 1
        if keysPerWorker[old.worker] == 0 { keysPerWorker[old.worker] = nil }
    }

    private mutating func dropLeastRecentlyUsed(_ n: Int) {
        for (key, _) in assignments.sorted(by: { $0.value.lastUse < $1.value.lastUse }).prefix(n) { unassign(key) }
    }

    public mutating func removeWorker(id: String) {
        for (key, a) in assignments where a.worker == id { unassign(key) }
    }

    public mutating func maintain(now: UInt64) {
        for (key, a) in assignments where now > a.lastUse && now - a.lastUse > maxIdleMs { unassign(key) }
    }

    public mutating func adopt(routingKey: String, worker: String?, now: UInt64) {
        let key = Self.normalize(routingKey)
        unassign(key)
        guard let worker else { return }
        assignments[key] = (worker, now)
        keysPerWorker[worker, default: 0] += 1
    }

    /// When a key was last routed or adopted (the `now` of that request), nil when not held.
    public func lastUse(of key: String) -> UInt64? { assignments[Self.normalize(key)]?.lastUse }

    /// The worker a key is assigned to, if any (tests, status).
    public func assignment(of key: String) -> String? { assignments[Self.normalize(key)]?.worker }
}
