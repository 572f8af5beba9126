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
        for delta in a.missing(for: c.digest()) { _ = c.apply(delta, physicalMs: 105) }
        for delta in b.missing(for: c.digest()) { _ = c.apply(delta, physicalMs: 106) }
        for r in [a, b, c] {
            #expect(r.value("workers", "http://w1:8000") == nil)
            #expect(r.value("workers", "http://w2:8000") == [2])
        }
        #expect(a.stores == b.stores && b.stores == c.stores)
        #expect(a.missing(for: c.digest()).isEmpty, "nothing left to send")
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

    @Test func bigStoresTravelInBoundedDeltas() {
        var a = Replicator(node: 1)
        for i in 0..<1000 { _ = a.set("sessions", "key-\(i)", [UInt8(i % 256)], physicalMs: UInt64(i)) }
        let deltas = a.missing(for: [:], maxEntries: 100)
        #expect(deltas.count == 10 && deltas.allSatisfy { $0.entries.count == 100 })
    }
}
