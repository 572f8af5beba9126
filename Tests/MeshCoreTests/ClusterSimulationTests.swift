import Foundation
import MeshCore
import MeshSimulation
import Testing

/// The whole mesh protocol (`MeshNode`: SWIM plus the replicated stores) on 50 simulated
/// routers, on a virtual clock over a seeded network with 10% loss, duplication, reordering,
/// skewed clocks, a crash and a partition, while writes and deletions keep coming from
/// everywhere. A failing seed is printed; `SMG_SIM_SEED=<seed> swift test --filter
/// ClusterSimulation` replays it.
@Suite struct ClusterSimulationTests {
    static var seeds: [UInt64] {
        if let s = ProcessInfo.processInfo.environment["SMG_SIM_SEED"], let seed = UInt64(s) { return [seed] }
        return [31, 32]
    }

    var config: MeshNode.Config {
        var c = MeshNode.Config()
        c.swim.protocolPeriodMs = 500
        c.swim.probeTimeoutMs = 200
        c.swim.pushPullIntervalMs = 5_000
        c.swim.reapAfterMs = 300_000
        return c
    }

    func names(_ range: Range<Int>) -> [String] { range.map(Simulator.name) }

    /// Live values of every store, per node: what a router would route with.
    func view(_ node: MeshNode) -> [String: [String: [UInt8]]] {
        var out: [String: [String: [UInt8]]] = [:]
        for store in ["workers", "sessions"] { out[store] = node.values(of: store) }
        return out
    }

    func storesAgree(_ sim: Simulator, among live: [String]) -> Bool {
        let first = view(sim.nodes[live[0]]!)
        return live.allSatisfy { view(sim.nodes[$0]!) == first }
    }

    @Test(arguments: seeds)
    func fiftyRoutersConvergeThroughLossCrashAndPartitionAndCollectTheirTombstones(seed: UInt64) {
        var sim = Simulator(seed: seed)
        let all = names(0..<50)
        for name in all {
            sim.addNode(name, seeds: name == "n0" ? [] : ["n0"], meshConfig: config)
            sim.run(forMs: 20)
        }
        let joined = sim.run(until: { $0.converged(alive: Set(all)) }, limitMs: 60_000)
        #expect(joined != nil, "seed \(seed): 50 routers did not converge in 60 s of virtual time")

        sim.lossRate = 0.10
        sim.duplicateRate = 0.02
        sim.delayMs = 1...80
        let minority = names(40..<50), majority = all.filter { !names(40..<50).contains($0) }
        var writes = 0, deletions = 0, split = false
        // 40 s of traffic: a write every 50 ms (one per tick) from a random running router, a
        // fifth of them deletions. n13 crashes at 5 s; n40–n49 are cut off from 8 s to 38 s.
        for step in 0..<800 {
            let t = step * 50
            if t == 5_000 { sim.crash("n13") }
            if t == 8_000 { sim.partition(minority, majority) }
            if t == 38_000 {
                split = sim.nodes["n0"]!.status(of: "n45") == .dead && sim.nodes["n45"]!.status(of: "n0") == .dead
                sim.heal()
            }
            var writer = all.randomElement(using: &sim.rng)!
            while writer == "n13" { writer = all.randomElement(using: &sim.rng)! }
            let delete = Int.random(in: 0..<5, using: &sim.rng) == 0
            let store = Bool.random(using: &sim.rng) ? "workers" : "sessions"
            let value: [UInt8]? = delete ? nil : Array("v\(step)".utf8)
            sim.write(on: writer, store, "key-\(Int.random(in: 0..<200, using: &sim.rng))", value)
            if delete { deletions += 1 } else { writes += 1 }
            sim.run(forMs: 50)
        }
        #expect(split, "seed \(seed): the partition was never noticed")
        let live = all.filter { $0 != "n13" }

        // Quiet (still lossy): membership and stores must settle.
        let settled = sim.run(until: { s in
            s.converged(alive: Set(live)) && live.allSatisfy { s.nodes[$0]!.status(of: "n13") == .dead } && storesAgree(s, among: live)
        }, limitMs: 120_000)
        #expect(settled != nil, "seed \(seed): not settled 120 s after the traffic stopped")
        #expect(live.allSatisfy { sim.nodes[$0]!.status(of: "n13") == .dead }, "seed \(seed): the crashed n13 is dead everywhere")
        #expect(storesAgree(sim, among: live), "seed \(seed): stores differ")
        let entries = view(sim.nodes["n0"]!).values.reduce(0) { $0 + $1.count }
        #expect(entries > 100, "seed \(seed): the workload left entries (\(entries))")

        // Every deletion has been seen by every live router: the tombstones go, and nothing
        // comes back.
        let tombstonesAtSettle = live.reduce(0) { $0 + sim.nodes[$1]!.replicator.state.tombstoneCount }
        let collected = sim.run(until: { s in live.allSatisfy { s.nodes[$0]!.replicator.state.tombstoneCount == 0 } }, limitMs: 600_000)
        #expect(collected != nil, "seed \(seed): tombstones left after 600 s: \(live.reduce(0) { $0 + sim.nodes[$1]!.replicator.state.tombstoneCount })")
        sim.run(forMs: 10_000)
        #expect(storesAgree(sim, among: live), "seed \(seed): stores differ after collection")
        #expect(view(sim.nodes["n0"]!).values.reduce(0) { $0 + $1.count } == entries, "seed \(seed): a collected deletion came back")
        print("""
            seed \(seed): 50 routers, \(writes) writes and \(deletions) deletions under 10% loss, a crash and a 30 s partition: \
            settled \(settled.map { "\($0) ms" } ?? "never") after the traffic, \(tombstonesAtSettle) tombstones collected \
            \(collected.map { "\($0) ms" } ?? "never") later; \(sim.messagesSent) messages, \(sim.bytesSent / 1024) KiB in all
            """)
    }
}
