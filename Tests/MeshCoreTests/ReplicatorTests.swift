import MeshCore
import Testing

@Suite struct ReplicatorTests {
    @Test func pushedDeltasAndDigestRepairConverge() {
        var a = Replicator(node: 1), b = Replicator(node: 2), c = Replicator(node: 3)
        let d1 = a.set("workers", "http://w1:8000", [1], physicalMs: 100)
        let d2 = b.set("workers", "http://w2:8000", [2], physicalMs: 101)
        let d3 = a.set("workers", "http://w1:8000", nil, physicalMs: 102)  // removed again
        _ = b.apply(d1, physicalMs: 103)
        _ = b.apply(d3, physicalMs: 103)
        _ = a.apply(d2, physicalMs: 104)
        // c missed every push: anti-entropy fills it in from a's and b's digests.
        for delta in a.missing(for: c.digest(nowMs: 105), nowMs: 105) { _ = c.apply(delta, physicalMs: 105) }
        for delta in b.missing(for: c.digest(nowMs: 106), nowMs: 106) { _ = c.apply(delta, physicalMs: 106) }
        for r in [a, b, c] {
            #expect(r.value("workers", "http://w1:8000") == nil)
            #expect(r.value("workers", "http://w2:8000") == [2])
        }
        #expect(a.stores == b.stores && b.stores == c.stores)
        #expect(a.missing(for: c.digest(nowMs: 107), nowMs: 107).isEmpty, "nothing left to send")
    }

    @Test func applyReportsOnlyRealChanges() {
        var a = Replicator(node: 1), b = Replicator(node: 2)
        let d = a.set("s", "k", [9], physicalMs: 10)
        #expect(b.apply(d, physicalMs: 11).count == 1)
        #expect(b.apply(d, physicalMs: 12).isEmpty, "a duplicate changes nothing")
        let newer = b.set("s", "k", [8], physicalMs: 5)  // b's clock is behind, but it saw a's stamp
        #expect(newer.entries[0].stamp > d.entries[0].stamp, "causality: b's write wins over what it saw")
        #expect(a.apply(newer, physicalMs: 13).count == 1)
        #expect(a.value("s", "k") == [8])
    }

    @Test func aLostEarlierWriteIsRepairedEvenAfterALaterOneArrived() {
        var a = Replicator(node: 1), b = Replicator(node: 2)
        let lost = a.set("workers", "w1", [1], physicalMs: 10)
        let later = a.set("workers", "w2", [2], physicalMs: 11)
        _ = b.apply(later, physicalMs: 12)  // the datagram with w1 never arrived
        #expect(b.value("workers", "w1") == nil)
        for d in a.missing(for: b.digest(nowMs: 13), nowMs: 13) { _ = b.apply(d, physicalMs: 13) }
        #expect(b.value("workers", "w1") == [1], "the fingerprint saw the gap")
        #expect(a.stores == b.stores)
        _ = lost
    }

    @Test func tombstonesAreCollectedAfterTheHorizon() {
        var a = Replicator(node: 1, tombstoneHorizonMs: 1000), b = Replicator(node: 2, tombstoneHorizonMs: 1000)
        _ = b.apply(a.set("s", "k", [1], physicalMs: 100), physicalMs: 100)
        let deletion = a.set("s", "k", nil, physicalMs: 200)
        #expect(a.stores["s"]!.tombstoneCount == 1)
        #expect(a.collectTombstones(nowMs: 1100) == 0, "too young")
        #expect(a.collectTombstones(nowMs: 1300) == 1)
        // A replica that saw the deletion in time agrees, and the collected tombstone does not
        // travel any more.
        var c = Replicator(node: 3, tombstoneHorizonMs: 1000)
        _ = c.apply(deletion, physicalMs: 300)
        c.collectTombstones(nowMs: 1300)
        #expect(a.missing(for: c.digest(nowMs: 1300), nowMs: 1300).isEmpty && a.digest(nowMs: 1300) == c.digest(nowMs: 1300))
        // b was cut off past the horizon and never saw it: the deletion is too old to apply, and
        // b's copy comes back to a. This is the documented price of time-based collection.
        #expect(b.applyCurrent(deletion, physicalMs: 1300).isEmpty)
        for d in b.missing(for: a.digest(nowMs: 1300), nowMs: 1300) { _ = a.apply(d, physicalMs: 1300) }
        #expect(a.value("s", "k") == [1])
    }

    @Test func bigStoresTravelInBoundedDeltas() {
        var a = Replicator(node: 1)
        for i in 0..<1000 { _ = a.set("sessions", "key-\(i)", [UInt8(i % 256)], physicalMs: UInt64(i)) }
        let deltas = a.missing(for: [:], nowMs: 2000, maxEntries: 100)
        #expect(deltas.count == 10 && deltas.allSatisfy { $0.entries.count == 100 })
    }
}
