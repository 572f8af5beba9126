import MeshCore
import Primitives
import Testing

/// Large version vectors travel as summaries: a hash, then bucket hashes, then the exact
/// counters of the buckets that differ. A receiver must know the sender's vector exactly when
/// the summary says enough, and must say it does not know otherwise.
@Suite struct VectorSummaryTests {
    /// A vector of `n` origins with counters from `rng`.
    func vector(_ n: Int, _ rng: inout SplitMix64) -> VersionVector {
        var v = VersionVector()
        for _ in 0..<n { v[rng.next()] = UInt64.random(in: 1...50, using: &rng) }
        return v
    }

    @Test func eachLevelTellsThePeersVectorOnlyWhenItCan() {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<200 {
            let mine = vector(Int.random(in: 33...400, using: &rng), &rng)
            var theirs = mine
            // A few origins ahead, behind, new or missing on the peer's side.
            for _ in 0..<Int.random(in: 1...5, using: &rng) {
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: theirs[rng.next()] = 3
                case 1: if let o = mine.counters.keys.randomElement(using: &rng) { theirs[o] = mine[o] + 2 }
                case 2: if let o = mine.counters.keys.randomElement(using: &rng) { theirs[o] = 0 }
                default: if let o = mine.counters.keys.randomElement(using: &rng) { theirs[o] = max(1, mine[o] - 1) }
                }
            }
            guard theirs != mine else { continue }

            // Level 1: the hash alone says "different", never which.
            #expect(VectorSummary(hashOf: theirs).resolve(against: mine) == nil)
            // Level 2: bucket hashes without counters are not enough either.
            let buckets = VectorSummary(of: theirs, exactMask: 0)
            #expect(buckets.resolve(against: mine) == nil)
            // Level 3: the counters of the buckets that differ make it exact.
            let differing = buckets.differingBuckets(from: mine.bucketHashes)
            #expect(differing == theirs.differingBuckets(from: mine) && differing != 0)
            #expect(VectorSummary(of: theirs, exactMask: differing).resolve(against: mine) == theirs)
            // And only those counters travel: far fewer than the whole vector.
            #expect(VectorSummary(of: theirs, exactMask: differing).exact.counters.count < theirs.counters.count)
            // Missing one differing bucket's counters: not known.
            let oneLess = differing & (differing - 1)
            #expect(VectorSummary(of: theirs, exactMask: oneLess).resolve(against: mine) == nil)
        }
    }

    @Test func equalVectorsAreKnownFromTheHashAlone() {
        var rng = SplitMix64(seed: 8)
        let v = vector(500, &rng)
        #expect(VectorSummary(hashOf: v).resolve(against: v) == v)
        #expect(VectorSummary(hashOf: VersionVector()).resolve(against: VersionVector()) == VersionVector())
    }

    /// A peer's bug or lie: bucket hashes that are not 64, or counters outside the buckets it
    /// says it gives. Nothing is believed that the summary does not vouch for.
    @Test func malformedSummariesAreNotBelieved() {
        var rng = SplitMix64(seed: 9)
        let mine = vector(100, &rng)
        var theirs = mine
        let changed = mine.counters.keys.first!
        theirs[changed] += 1
        var s = VectorSummary(of: theirs, exactMask: theirs.differingBuckets(from: mine))
        s.buckets.removeLast()
        #expect(s.resolve(against: mine) == nil, "63 bucket hashes")

        let outside = rng.next()
        var lying = VectorSummary(of: theirs, exactMask: theirs.differingBuckets(from: mine))
        var exact = lying.exact
        exact[outside] = 99
        lying.exact = exact
        let resolved = lying.resolve(against: mine)
        if lying.exactMask & (1 << UInt64(VersionVector.bucket(of: outside))) == 0 {
            #expect(resolved == theirs, "a counter outside the mask is ignored")
        }
    }
}
