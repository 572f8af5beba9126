import MeshCore
import Testing

/// Replicated stores on a lossy, reordering network of 50 replicas, driven the way the mesh
/// shell drives them: every write pushed to every replica (each copy may be lost or delayed),
/// and once a "second" each replica sends its digest to one random other, which answers with
/// whatever stores differ. Seeded: a failing seed replays.
@Suite struct ReplicationSimulationTests {
    struct Packet {
        let at: UInt64
        let to: Int
        let from: Int
        let kind: Kind
        enum Kind { case delta(ReplicationDelta), digest(ReplicationDigest) }
    }

    @Test(arguments: [21, 22] as [UInt64])
    func fiftyReplicasConvergeUnderLossAndCollectTombstones(seed: UInt64) {
        var rng = SplitMix64(state: seed)
        let n = 50
        let horizon: UInt64 = 30_000
        var replicas = (0..<n).map { Replicator(node: UInt64($0 + 1), tombstoneHorizonMs: horizon) }
        var inFlight: [Packet] = []
        var now: UInt64 = 1_000_000
        func send(_ kind: Packet.Kind, from: Int, to: Int) {
            guard Double.random(in: 0..<1, using: &rng) >= 0.10 else { return }  // 10% loss
            inFlight.append(Packet(at: now + UInt64.random(in: 1...200, using: &rng), to: to, from: from, kind: kind))  // reordering
        }
        func step(_ ms: UInt64) {
            now += ms
            inFlight.sort { $0.at < $1.at }
            while let p = inFlight.first, p.at <= now {
                inFlight.removeFirst()
                switch p.kind {
                case .delta(let d): _ = replicas[p.to].applyCurrent(d, physicalMs: now)
                case .digest(let d):
                    for delta in replicas[p.to].missing(for: d, nowMs: now) { send(.delta(delta), from: p.to, to: p.from) }
                }
            }
        }
        func antiEntropyRound() {
            for i in 0..<n {
                var j = Int.random(in: 0..<(n - 1), using: &rng)
                if j >= i { j += 1 }
                send(.digest(replicas[i].digest(nowMs: now)), from: i, to: j)
            }
        }
        // 2,000 writes and deletions from random replicas over 20 s, with anti-entropy running.
        for t in 0..<2000 {
            let writer = Int.random(in: 0..<n, using: &rng)
            let key = "key-\(Int.random(in: 0..<300, using: &rng))"
            let value: [UInt8]? = Int.random(in: 0..<5, using: &rng) == 0 ? nil : [UInt8(t % 256)]
            let store = Bool.random(using: &rng) ? "workers" : "sessions"
            let delta = replicas[writer].set(store, key, value, physicalMs: now)
            for peer in 0..<n where peer != writer { send(.delta(delta), from: writer, to: peer) }
            step(10)
            if t % 100 == 0 { antiEntropyRound() }
        }
        // Quiet: anti-entropy alone must finish the job.
        var rounds = 0
        while rounds < 30, !replicas.allSatisfy({ $0.stores == replicas[0].stores }) {
            antiEntropyRound()
            step(1000)
            rounds += 1
        }
        #expect(replicas.allSatisfy { $0.stores == replicas[0].stores }, "seed \(seed): not converged after \(rounds) anti-entropy rounds")
        let tombstones = replicas[0].stores.values.reduce(0) { $0 + $1.tombstoneCount }
        #expect(tombstones > 0, "seed \(seed): the run deleted things")
        // Past the horizon, every replica collects its tombstones and they stay collected.
        step(horizon + 1000)
        for i in 0..<n { replicas[i].collectTombstones(nowMs: now) }
        for _ in 0..<3 { antiEntropyRound(); step(1000) }
        #expect(replicas.allSatisfy { $0.stores.values.allSatisfy { $0.tombstoneCount == 0 } }, "seed \(seed): tombstones came back")
        #expect(replicas.allSatisfy { $0.stores == replicas[0].stores }, "seed \(seed): diverged after collection")
        print("seed \(seed): 50 replicas converged after \(rounds) quiet anti-entropy rounds; \(tombstones) tombstones collected")
    }
}
