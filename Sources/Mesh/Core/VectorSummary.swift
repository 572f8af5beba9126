import Primitives

/// A version vector as anti-entropy describes it once it is too large to send whole.
///
/// A whole vector is 16 bytes per origin, and every digest carried it: at 1,000 routers that is
/// 16 KB per digest, several times a second per router, although between two converged routers
/// the answer is always "same". So a large vector travels in three levels of detail, each asked
/// for only when the coarser one differs:
///
/// 1. one hash of the whole vector (equal hashes: equal vectors, nothing else is sent);
/// 2. the hashes of 64 buckets (origins are spread over buckets by a hash of the origin);
/// 3. the exact counters of the buckets whose hashes differ.
///
/// A receiver that knows a peer's bucket hashes and the exact counters of the buckets that
/// differ from its own knows the peer's whole vector: every other bucket is the same as its
/// own. `resolve(against:)` does that. Hashes are XORs of one mixed 64-bit value per
/// (origin, counter), so they are independent of order.
public struct VectorSummary: Sendable, Equatable {
    public static let bucketCount = 64
    /// Vectors up to this many origins travel whole (512 bytes at most): small meshes keep the
    /// simpler exchange, and the wire messages of versions that knew nothing else.
    public static let wholeUpTo = 32

    /// Hash of the whole vector.
    public var hash: UInt64
    /// The hash of every bucket, or empty at the first level.
    public var buckets: [UInt64]
    /// Which buckets `exact` gives in full (bit b: bucket b).
    public var exactMask: UInt64
    /// The counters of the origins in the buckets of `exactMask`.
    public var exact: VersionVector

    public init(hash: UInt64, buckets: [UInt64] = [], exactMask: UInt64 = 0, exact: VersionVector = VersionVector()) {
        self.hash = hash
        self.buckets = buckets
        self.exactMask = exactMask
        self.exact = exact
    }

    /// The first level of `vector`'s summary: its hash alone.
    public init(hashOf vector: VersionVector) {
        self.init(hash: vector.summaryHash)
    }

    /// The second or third level: every bucket's hash, and the exact counters of `exactMask`'s
    /// buckets.
    public init(of vector: VersionVector, exactMask: UInt64) {
        let buckets = vector.bucketHashes
        self.init(hash: buckets.reduce(0, ^), buckets: buckets, exactMask: exactMask, exact: vector.restricted(to: exactMask))
    }

    /// The peer's whole vector, if this summary and `mine` together tell it: `mine` when the
    /// hashes are equal; otherwise each bucket from `exact` where given, or from `mine` where
    /// the bucket hashes agree. Nil when a bucket differs and its counters were not given
    /// (or a hostile peer sent bucket hashes that are not 64).
    public func resolve(against mine: VersionVector, mineBuckets: [UInt64]? = nil) -> VersionVector? {
        let myBuckets = mineBuckets ?? mine.bucketHashes
        if hash == myBuckets.reduce(0, ^) { return mine }
        guard buckets.count == Self.bucketCount else { return nil }
        var known = exactMask
        for b in 0..<Self.bucketCount where buckets[b] == myBuckets[b] { known |= 1 << UInt64(b) }
        guard known == .max else { return nil }
        var out = mine.restricted(to: ~exactMask)
        // Counters given for buckets outside the mask would be a peer's bug or a lie: ignored.
        for (origin, seq) in exact.counters where exactMask & VersionVector.bit(of: origin) != 0 { out[origin] = seq }
        return out
    }

    /// The buckets where this summary's hashes differ from `mine` (all of them without
    /// bucket hashes).
    public func differingBuckets(from mineBuckets: [UInt64]) -> UInt64 {
        guard buckets.count == Self.bucketCount else { return .max }
        return Self.differing(buckets, mineBuckets)
    }

    /// The bits of the buckets whose hashes differ between two lists of 64 (version vectors
    /// here, member tables in SWIM's push-pull).
    static func differing(_ a: [UInt64], _ b: [UInt64]) -> UInt64 {
        var mask: UInt64 = 0
        for i in 0..<min(a.count, b.count, bucketCount) where a[i] != b[i] { mask |= 1 << UInt64(i) }
        return mask
    }
}

extension VersionVector {
    /// Which of the 64 buckets an origin falls in.
    public static func bucket(of origin: UInt64) -> Int { Int(SplitMix64.mix(origin) >> 58) }
    public static func bit(of origin: UInt64) -> UInt64 { 1 << UInt64(bucket(of: origin)) }

    /// One origin's counter as a well-spread 64-bit value (XOR-ed into its bucket's hash).
    static func mix(_ origin: UInt64, _ seq: UInt64) -> UInt64 { SplitMix64.mix(origin ^ SplitMix64.mix(seq)) }

    /// The hash of every bucket.
    public var bucketHashes: [UInt64] {
        var out = [UInt64](repeating: 0, count: VectorSummary.bucketCount)
        for (origin, seq) in counters { out[Self.bucket(of: origin)] ^= Self.mix(origin, seq) }
        return out
    }

    /// The hash of the whole vector (the XOR of its bucket hashes).
    public var summaryHash: UInt64 { counters.reduce(0) { $0 ^ Self.mix($1.key, $1.value) } }

    /// Only the origins of the buckets in `mask`.
    public func restricted(to mask: UInt64) -> VersionVector {
        if mask == .max { return self }
        return VersionVector(counters.filter { mask & Self.bit(of: $0.key) != 0 })
    }

    /// The buckets in which this vector and `other` differ.
    public func differingBuckets(from other: VersionVector) -> UInt64 {
        var mask: UInt64 = 0
        for (origin, seq) in counters where other[origin] != seq { mask |= Self.bit(of: origin) }
        for (origin, seq) in other.counters where self[origin] != seq { mask |= Self.bit(of: origin) }
        return mask
    }

    /// The counters where this vector is ahead of `other`: all an answer needs to vouch for.
    public func ahead(of other: VersionVector) -> VersionVector {
        VersionVector(counters.filter { $0.value > other[$0.key] })
    }
}
