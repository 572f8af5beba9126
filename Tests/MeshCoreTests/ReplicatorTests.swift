import MeshCore
import Testing

@Suite struct ReplicatorTests {
    @Test func pushedWritesAndAnswersConverge() {
        var a = Replicator(origin: 1), b = Replicator(origin: 2), c = Replicator(origin: 3)
        let e1 = a.write("workers", "http://w1:8000", [1], physicalMs: 100)
        let e2 = b.write("workers", "http://w2:8000", [2], physicalMs: 101)
        let e3 = a.write("workers", "http://w1:8000", nil, physicalMs: 102)  // removed again
        _ = b.apply([e1, e3], physicalMs: 103)
        _ = a.apply([e2], physicalMs: 104)
        // c missed every push: its digest tells a and b exactly what to send.
        _ = c.absorb(a.missing(for: c.vector), through: a.vector, from: "a", physicalMs: 105)
        _ = c.absorb(b.missing(for: c.vector), through: b.vector, from: "b", physicalMs: 106)
        for r in [a, b, c] {
            #expect(r.value("workers", "http://w1:8000") == nil)
            #expect(r.value("workers", "http://w2:8000") == [2])
        }
        #expect(a.state == b.state && b.state == c.state)
        #expect(a.missing(for: c.vector).isEmpty, "nothing left to send")
        #expect(c.missing(for: VersionVector([1: 1])).count == 2, "only what the vector lacks: e2 and e3, not e1's superseded write")
    }

    @Test func applyReportsOnlyRealChanges() {
        var a = Replicator(origin: 1), b = Replicator(origin: 2)
        let e = a.write("s", "k", [9], physicalMs: 10)
        #expect(b.apply([e], physicalMs: 11).count == 1)
        #expect(b.apply([e], physicalMs: 12).isEmpty, "a duplicate changes nothing")
        let newer = b.write("s", "k", [8], physicalMs: 5)  // b's clock is behind, but it saw a's stamp
        #expect(newer.stamp > e.stamp, "causality: b's write wins over what it saw")
        #expect(a.apply([newer], physicalMs: 13).count == 1)
        #expect(a.value("s", "k") == [8])
        #expect(a.apply([e], physicalMs: 14).isEmpty, "an older write arriving late loses")
    }

    @Test func aLostEarlierWriteLeavesAGapTheVectorShows() {
        var a = Replicator(origin: 1), b = Replicator(origin: 2)
        _ = a.write("workers", "w1", [1], physicalMs: 10)  // this datagram never arrives
        let later = a.write("workers", "w2", [2], physicalMs: 11)
        _ = b.apply([later], physicalMs: 12)
        #expect(b.vector[1] == 0 && b.state.context.cloud == [Dot(origin: 1, seq: 2)], "seen out of order: in the cloud")
        let answer = a.missing(for: b.vector)
        #expect(answer.map(\.key) == ["w1", "w2"])
        _ = b.absorb(answer, through: a.vector, from: "a", physicalMs: 13)
        #expect(b.value("workers", "w1") == [1])
        #expect(b.vector[1] == 2 && b.state.context.cloud.isEmpty, "the gap is closed")
        #expect(a.state == b.state)
    }

    @Test func aTombstoneIsCollectedOnlyOnceEveryLiveMemberHasSeenIt() {
        var a = Replicator(origin: 1), b = Replicator(origin: 2)
        _ = b.apply([a.write("s", "k", [1], physicalMs: 100)], physicalMs: 100)
        let deletion = a.write("s", "k", nil, physicalMs: 200)
        #expect(a.state.tombstoneCount == 1)
        #expect(a.collectTombstones(live: ["b"]) == 0, "b's vector is not known")
        a.notePeer("b", context: b.state.context)
        #expect(a.collectTombstones(live: ["b"]) == 0, "b has not seen the deletion")
        _ = b.apply([deletion], physicalMs: 210)
        a.notePeer("b", context: b.state.context)
        #expect(a.collectTombstones(live: ["b", "c"]) == 0, "c is live and unknown")
        #expect(a.collectTombstones(live: ["b"]) == 1)
        #expect(a.state.tombstoneCount == 0 && a.value("s", "k") == nil)
        // The late duplicate of the deletion, or of the write it deleted, changes nothing now.
        _ = a.apply([deletion], physicalMs: 300)
        #expect(a.state.tombstoneCount == 0)
    }

    @Test func aReplicaBackFromAPartitionDoesNotBringADeletionBack() {
        var a = Replicator(origin: 1), b = Replicator(origin: 2), c = Replicator(origin: 3)
        let w = a.write("workers", "w1", [1], physicalMs: 100)
        _ = b.apply([w], physicalMs: 101)
        _ = c.apply([w], physicalMs: 101)
        // c is cut off. a deletes w1; b sees it; both collect the tombstone (c is not live).
        let t = a.write("workers", "w1", nil, physicalMs: 200)
        _ = b.apply([t], physicalMs: 201)
        a.notePeer("b", context: b.state.context)
        b.notePeer("a", context: a.state.context)
        #expect(a.collectTombstones(live: ["b"]) == 1 && b.collectTombstones(live: ["a"]) == 1)
        // c comes back still holding w1. What c can send a is only what a's vector lacks: not w1.
        #expect(c.missing(for: a.vector).isEmpty)
        _ = a.apply([w], physicalMs: 300)
        #expect(a.value("workers", "w1") == nil, "a late copy of a deleted write is ignored")
        // The full-state exchange a member back from the dead gets settles c too.
        let changed = c.join(a.state.allEntries, context: a.state.context, from: "a", physicalMs: 301)
        #expect(changed.count == 1 && changed[0].entry == nil, "c learns w1 is gone")
        _ = a.join(c.state.allEntries, context: c.state.context, from: "c", physicalMs: 302)
        #expect(a.value("workers", "w1") == nil && c.value("workers", "w1") == nil)
        #expect(a.state.values(of: "workers") == c.state.values(of: "workers"))
    }

    @Test func theFingerprintFollowsTheLiveEntries() {
        var a = Replicator(origin: 1), b = Replicator(origin: 2)
        for i in 0..<50 { _ = b.apply([a.write("sessions", "key-\(i)", [UInt8(i)], physicalMs: UInt64(i))], physicalMs: 100) }
        #expect(a.digest() == b.digest() && a.digest().liveCount == 50)
        _ = b.apply([a.write("sessions", "key-7", nil, physicalMs: 200)], physicalMs: 200)
        #expect(a.digest().liveCount == 49 && a.digest() == b.digest())
        var c = b
        _ = c.write("sessions", "key-8", [0], physicalMs: 300)
        #expect(c.digest().fingerprint != b.digest().fingerprint)
    }
}
