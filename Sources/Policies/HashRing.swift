/// A consistent-hash ring with virtual nodes: each worker id owns `replicas` points, a key
/// belongs to the first point clockwise of its hash. When a worker joins or leaves, only the
/// keys between its points and their predecessors move (about 1/N of them).
public struct HashRing: Sendable {
    public let replicas: Int
    public private(set) var members: [String] = []
    private var points: [(hash: UInt64, member: Int)] = []

    public init(members: [String], replicas: Int = 160) {
        self.replicas = replicas
        rebuild(members)
    }

    public mutating func rebuild(_ members: [String]) {
        self.members = members
        points = []
        points.reserveCapacity(members.count * replicas)
        for (m, id) in members.enumerated() {
            for r in 0..<replicas { points.append((PromptBlocks.hash(Array("\(id)#\(r)".utf8)), m)) }
        }
        points.sort { $0.hash < $1.hash }
    }

    /// Members in ring order starting from the owner of `hash`, each once.
    public func walk(from hash: UInt64) -> [Int] {
        guard !points.isEmpty else { return [] }
        var lo = 0, hi = points.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if points[mid].hash < hash { lo = mid + 1 } else { hi = mid }
        }
        var seen = [Bool](repeating: false, count: members.count)
        var order: [Int] = []
        var k = lo
        while order.count < members.count {
            let m = points[k % points.count].member
            if !seen[m] { seen[m] = true; order.append(m) }
            k += 1
        }
        return order
    }

    /// The member owning `hash`.
    public func owner(of hash: UInt64) -> Int? { walk(from: hash).first }
}

/// Keeps a ring in step with the candidate list: rebuilt only when the worker ids change.
struct RingCache: Sendable {
    private var ring = HashRing(members: [])

    /// The candidates' indices in ring order from `hash`.
    mutating func order(for hash: UInt64, workers: [WorkerCandidate]) -> [Int] {
        if ring.members.count != workers.count || !zip(ring.members, workers).allSatisfy({ $0 == $1.id }) {
            ring.rebuild(workers.map(\.id))
        }
        return ring.walk(from: hash)
    }
}
