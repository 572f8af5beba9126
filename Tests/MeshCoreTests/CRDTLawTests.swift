import MeshCore
import Testing

/// Merge laws for every replicated type: commutative, associative, idempotent — checked on
/// random replicas from seeded generators.
@Suite struct CRDTLawTests {
    var rng = Simulator.Rng(state: 99)

    mutating func randomMap() -> LWWMap<String, Int> {
        var m = LWWMap<String, Int>()
        for _ in 0..<Int.random(in: 0...12, using: &rng) {
            let key = "k\(Int.random(in: 0..<8, using: &rng))"
            let stamp = HLCStamp(wallMs: UInt64.random(in: 0..<20, using: &rng), logical: UInt32.random(in: 0..<3, using: &rng), node: UInt64.random(in: 0..<3, using: &rng))
            // A stamp names one write: derive the value from it, as a real writer would.
            let value: Int? = stamp.logical == 2 ? nil : Int(stamp.wallMs * 10 + stamp.node)
            m.set(key, value, stamp: stamp)
        }
        return m
    }

    mutating func randomCounter() -> PNCounter {
        var c = PNCounter()
        for _ in 0..<Int.random(in: 0...10, using: &rng) {
            let node = UInt64.random(in: 0..<4, using: &rng)
            if Bool.random(using: &rng) { c.increment(node: node, by: UInt64.random(in: 1...5, using: &rng)) } else { c.decrement(node: node) }
        }
        return c
    }

    func merged<T: CRDT>(_ a: T, _ b: T) -> T {
        var x = a
        x.merge(b)
        return x
    }

    func checkLaws<T: CRDT>(_ a: T, _ b: T, _ c: T) {
        #expect(merged(a, b) == merged(b, a), "commutative")
        #expect(merged(merged(a, b), c) == merged(a, merged(b, c)), "associative")
        #expect(merged(a, a) == a, "idempotent")
        #expect(merged(merged(a, b), b) == merged(a, b), "idempotent under repeats")
    }

    @Test mutating func lwwMapObeysTheLaws() {
        for _ in 0..<500 { checkLaws(randomMap(), randomMap(), randomMap()) }
    }

    @Test mutating func pnCounterObeysTheLaws() {
        for _ in 0..<500 { checkLaws(randomCounter(), randomCounter(), randomCounter()) }
    }

    @Test func lastWriterWinsAndDeletesAreTombstones() {
        var a = LWWMap<String, String>()
        var b = LWWMap<String, String>()
        let d1 = a.set("worker", "http://w1", stamp: HLCStamp(wallMs: 10, logical: 0, node: 1))
        b.merge(d1)
        let d2 = b.set("worker", nil, stamp: HLCStamp(wallMs: 11, logical: 0, node: 2))
        a.merge(d2)
        a.merge(d1)  // an old delta arriving late changes nothing
        #expect(a["worker"] == nil && a == b)
        #expect(a.tombstoneCount == 1)
        #expect(a.changes(after: HLCStamp(wallMs: 10, logical: 5, node: 9)).entries.count == 1, "only the deletion is newer")
        a.collect(before: HLCStamp(wallMs: 12, logical: 0, node: 0))
        #expect(a.tombstoneCount == 0)
    }

    @Test func deltasConvergeReplicasInAnyOrder() {
        var rng = Simulator.Rng(state: 5)
        var writes: [LWWMap<String, Int>] = []
        var source = LWWMap<String, Int>()
        for i in 0..<200 {
            let stamp = HLCStamp(wallMs: UInt64(i), logical: 0, node: UInt64(i % 3))
            writes.append(source.set("k\(Int.random(in: 0..<20, using: &rng))", i % 7 == 0 ? nil : i, stamp: stamp))
        }
        var replicas = (0..<3).map { _ in LWWMap<String, Int>() }
        for r in replicas.indices {
            for d in writes.shuffled(using: &rng) + writes.shuffled(using: &rng).prefix(50) { replicas[r].merge(d) }
        }
        #expect(replicas.allSatisfy { $0 == source })
    }

    @Test func hybridLogicalClocksNeverGoBackwards() {
        var a = HybridLogicalClock(node: 1)
        var b = HybridLogicalClock(node: 2)
        let s1 = a.now(physicalMs: 100)
        let s2 = a.now(physicalMs: 100)
        let s3 = a.now(physicalMs: 50)  // the wall clock stepped back
        #expect(s1 < s2 && s2 < s3)
        b.observe(s3, physicalMs: 10)  // b's clock is far behind
        let s4 = b.now(physicalMs: 10)
        #expect(s4 > s3, "b's next stamp is after what it saw")
        #expect(b.now(physicalMs: 1000).wallMs == 1000, "and catches up with physical time")
    }
}
