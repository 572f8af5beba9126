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
///
/// Origins of processes that are gone are *retired*: once every live member has seen an
/// origin's last write, the origin leaves the vector (so vectors, digests and the tombstones'
/// seen-vectors are bounded by the live processes, not by every restart ever made) and its final
/// seq stays here as a floor, local to this replica, so its old writes are still recognised as
/// seen wherever they come from. A write above a floor (the process was not gone after all)
/// brings the origin back into the vector.
public struct CausalContext: Sendable, Equatable {
    public private(set) var vector = VersionVector()
    public private(set) var cloud: Set<Dot> = []
    /// Retired origins and the seq up to which their writes are covered.
    public private(set) var retired: [UInt64: UInt64] = [:]

    public init() {}

    public init(vector: VersionVector, cloud: Set<Dot> = [], retired: [UInt64: UInt64] = [:]) {
        self.vector = vector
        self.cloud = cloud
        self.retired = retired.filter { $0.value > 0 }
        compact()
    }

    public func covers(_ dot: Dot) -> Bool {
        vector.covers(dot) || cloud.contains(dot) || dot.seq <= retired[dot.origin, default: 0]
    }

    public mutating func add(_ dot: Dot) {
        guard !covers(dot) else { return }
        if extends(dot) {
            advance(to: dot)
            compact()
        } else {
            cloud.insert(dot)
        }
    }

    public mutating func merge(_ other: CausalContext) {
        vector.merge(other.vector)
        cloud.formUnion(other.cloud)
        for (origin, seq) in other.retired where seq > retired[origin, default: 0] { retired[origin] = seq }
        compact()
    }

    public mutating func merge(_ other: VersionVector) {
        vector.merge(other)
        compact()
    }

    /// Retires `origin` at `seq`: its writes up to `seq` are covered from now on, and the origin
    /// leaves the vector unless the vector is already past `seq` (then nothing changes: the
    /// process wrote after whoever retired it looked).
    public mutating func retire(_ origin: UInt64, at seq: UInt64) {
        guard vector[origin] <= seq, seq > retired[origin, default: 0] else { return }
        retired[origin] = seq
        compact()
    }

    /// The counter of `origin`, a floor included: what this context has seen of it.
    public func seen(_ origin: UInt64) -> UInt64 { max(vector[origin], retired[origin, default: 0]) }

    /// Whether `dot` is the next write of its origin after what is covered contiguously (the
    /// vector's prefix, or the floor). Counters come off the wire: one at `UInt64.max` (a buggy
    /// or hostile peer) must not overflow (found by fuzz/run.sh wire).
    private func extends(_ dot: Dot) -> Bool {
        let v = seen(dot.origin)
        return v < .max && dot.seq == v + 1
    }

    /// The vector takes `dot`'s seq for its origin; past a floor, the origin is back.
    private mutating func advance(to dot: Dot) {
        vector[dot.origin] = dot.seq
        if dot.seq > retired[dot.origin, default: 0] { retired[dot.origin] = nil }
    }

    /// Moves cloud dots that extend the vector into it, drops those covered, and keeps retired
    /// origins out of the vector (a merged peer vector that still holds one at or below its
    /// floor); a vector past a floor ends the retirement.
    private mutating func compact() {
        if !retired.isEmpty {
            // Whichever is smaller is walked: floors pile up with restarts, vectors with members.
            let origins = retired.count <= vector.counters.count ? Array(retired.keys) : Array(vector.counters.keys)
            for origin in origins {
                guard let floor = retired[origin] else { continue }
                let v = vector[origin]
                if v > floor { retired[origin] = nil } else if v > 0 { vector[origin] = 0 }
            }
        }
        guard !cloud.isEmpty else { return }
        var progressed = true
        while progressed {
            progressed = false
            for dot in cloud where extends(dot) {
                advance(to: dot)
                progressed = true
            }
            cloud = cloud.filter { $0.seq > seen($0.origin) }
        }
    }
}
