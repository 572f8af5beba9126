/// One write's identity: the replica that made it (its origin id, fresh for every process
/// start) and that replica's sequence number for it. Every write gets the next number, so
/// "what have you seen of origin O" is a single number when nothing was lost on the way.
public struct Dot: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var origin: UInt64
    public var seq: UInt64
    public init(origin: UInt64, seq: UInt64) {
        self.origin = origin
        self.seq = seq
    }
    public static func < (a: Dot, b: Dot) -> Bool { (a.origin, a.seq) < (b.origin, b.seq) }
    public var description: String { "\(String(origin, radix: 16)):\(seq)" }
}

/// Per origin, the highest sequence number up to which every write has been seen (or
/// superseded by something seen). Pointwise maximum is the merge; the pointwise minimum over
/// the live members is what all of them have seen: the frontier below which a deletion's
/// tombstone can be forgotten.
public struct VersionVector: Sendable, Hashable, CustomStringConvertible {
    public private(set) var counters: [UInt64: UInt64]

    public init(_ counters: [UInt64: UInt64] = [:]) {
        self.counters = counters.filter { $0.value > 0 }
    }

    public subscript(origin: UInt64) -> UInt64 {
        get { counters[origin] ?? 0 }
        set { counters[origin] = newValue == 0 ? nil : newValue }
    }

    public func covers(_ dot: Dot) -> Bool { dot.seq <= self[dot.origin] }

    /// Everything `other` has seen, this has too.
    public func dominates(_ other: VersionVector) -> Bool {
        other.counters.allSatisfy { self[$0.key] >= $0.value }
    }

    public mutating func merge(_ other: VersionVector) {
        for (origin, seq) in other.counters where seq > self[origin] { counters[origin] = seq }
    }

    /// What all of `vectors` have seen (an origin missing from one of them counts as 0).
    public static func meet(_ vectors: [VersionVector]) -> VersionVector {
        guard var out = vectors.first else { return VersionVector() }
        for v in vectors.dropFirst() {
            for (origin, seq) in out.counters { out[origin] = min(seq, v[origin]) }
        }
        return out
    }

    /// How many writes this has seen that `other` has not: a peer's replication lag.
    public func writesAhead(of other: VersionVector) -> UInt64 {
        counters.reduce(0) { $0 + ($1.value > other[$1.key] ? $1.value - other[$1.key] : 0) }
    }

    public var description: String {
        "[" + counters.sorted { $0.key < $1.key }.map { "\(String($0.key, radix: 16)):\($0.value)" }.joined(separator: " ") + "]"
    }
}

/// Every write a replica has seen: a version vector for the contiguous prefix of each origin
/// plus the "dot cloud" of writes seen out of order (a datagram arrived before an earlier one
/// that was lost). The cloud drains into the vector as the gaps fill, or when a peer's
/// complete answer vouches for everything up to its own vector.
public struct CausalContext: Sendable, Equatable {
    public private(set) var vector = VersionVector()
    public private(set) var cloud: Set<Dot> = []

    public init() {}

    public init(vector: VersionVector, cloud: Set<Dot> = []) {
        self.vector = vector
        self.cloud = cloud
        compact()
    }

    public func covers(_ dot: Dot) -> Bool { vector.covers(dot) || cloud.contains(dot) }

    public mutating func add(_ dot: Dot) {
        guard !covers(dot) else { return }
        if Self.extends(vector, dot) {
            vector[dot.origin] = dot.seq
            compact()
        } else {
            cloud.insert(dot)
        }
    }

    public mutating func merge(_ other: CausalContext) {
        vector.merge(other.vector)
        cloud.formUnion(other.cloud)
        compact()
    }

    public mutating func merge(_ other: VersionVector) {
        vector.merge(other)
        compact()
    }

    /// Whether `dot` is the next write of its origin after `vector`'s prefix. Counters come off
    /// the wire: one at `UInt64.max` (a buggy or hostile peer) must not overflow (found by
    /// fuzz/run.sh wire).
    private static func extends(_ vector: VersionVector, _ dot: Dot) -> Bool {
        let v = vector[dot.origin]
        return v < .max && dot.seq == v + 1
    }

    /// Moves cloud dots that extend the vector into it, and drops those it covers.
    private mutating func compact() {
        guard !cloud.isEmpty else { return }
        var progressed = true
        while progressed {
            progressed = false
            for dot in cloud where Self.extends(vector, dot) {
                vector[dot.origin] = dot.seq
                progressed = true
            }
            cloud = cloud.filter { !vector.covers($0) }
        }
    }
}
