import MeshCore
import MeshSimulation
import Testing

/// Merge laws of the replicated state: commutative, associative, idempotent. Checked on
/// replicas reached the way real ones are: random writes and deletions on three replicas,
/// random pushes between them, an occasional full join. Seeded.
@Suite struct CRDTLawTests {
    func replicas(seed: UInt64) -> [ReplicaState] {
        var rng = Simulator.Rng(seed: seed)
        var rs = (1...3).map { Replicator(origin: UInt64($0)) }
        var written: [ReplicatedEntry] = []
        var t: UInt64 = 1000
        for _ in 0..<Int.random(in: 0...20, using: &rng) {
            t += UInt64.random(in: 0...3, using: &rng)
            let i = Int.random(in: 0..<3, using: &rng)
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<5:
                let value: [UInt8]? = Int.random(in: 0..<3, using: &rng) == 0 ? nil : [UInt8.random(in: 0...255, using: &rng)]
                written.append(rs[i].write(Bool.random(using: &rng) ? "a" : "b", "k\(Int.random(in: 0..<5, using: &rng))", value, physicalMs: t))
            case 5..<9:
                if let e = written.randomElement(using: &rng) { _ = rs[i].apply([e], physicalMs: t) }
            default:
                let j = Int.random(in: 0..<3, using: &rng)
                _ = rs[i].join(rs[j].state.allEntries, context: rs[j].state.context, from: "r\(j)", physicalMs: t)
            }
        }
        return rs.map(\.state)
    }

    func merged<T: CRDT>(_ a: T, _ b: T) -> T {
        var x = a
        x.merge(b)
        return x
    }

    @Test func replicaStateObeysTheLaws() {
        for seed in 0..<400 as Range<UInt64> {
            let r = replicas(seed: seed)
            let (a, b, c) = (r[0], r[1], r[2])
            #expect(merged(a, b) == merged(b, a), "commutative (seed \(seed))")
            #expect(merged(merged(a, b), c) == merged(a, merged(b, c)), "associative (seed \(seed))")
            #expect(merged(a, a) == a, "idempotent (seed \(seed))")
            #expect(merged(merged(a, b), b) == merged(a, b), "idempotent under repeats (seed \(seed))")
        }
    }

    @Test func aJoinHoldsEverythingEitherSideHeld() {
        for seed in 400..<600 as Range<UInt64> {
            let r = replicas(seed: seed)
            let j = merged(r[0], r[1])
            #expect(j.context.vector.dominates(r[0].context.vector) && j.context.vector.dominates(r[1].context.vector), "seed \(seed)")
        }
    }
}
