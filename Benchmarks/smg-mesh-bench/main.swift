import Foundation
import MeshCore
import MeshSimulation

// smg-mesh-bench: the mesh core (`MeshNode`: SWIM and the replicated stores) on the
// deterministic simulated network, at sizes beyond the test suite's. Prints virtual time,
// protocol rounds and bytes to converge after a join storm, the steady-state traffic per node,
// to replicate a burst of writes to every node (10% loss) and collect its deletions, and to
// declare a crashed node dead everywhere.
// Numbers are in virtual time (the protocol's, not this machine's); wall time is printed too.

let sizes = CommandLine.arguments.dropFirst().compactMap { Int($0) }
var config = SwimNode.Config()
config.protocolPeriodMs = 250
config.probeTimeoutMs = 100
config.suspicionMult = 3
config.suspicionMaxMult = 3
print("smg-mesh-bench: protocol period \(config.protocolPeriodMs) ms, probe timeout \(config.probeTimeoutMs) ms, 1–20 ms network delay, seed 1")
for n in sizes.isEmpty ? [50, 200] : sizes {
    let wallStart = Date()
    var sim = NetworkSimulator(seed: 1)
    for i in 0..<n {
        sim.addNode(NetworkSimulator.name(i), seeds: i == 0 ? [] : [NetworkSimulator.name(0)], config: config)
    }
    let all = Set((0..<n).map(NetworkSimulator.name))
    let joinMs = sim.run(until: { $0.converged(alive: all) }, limitMs: 600_000)
    let joinBytes = sim.bytesSent, joinMessages = sim.messagesSent
    print("\(n) nodes: join storm converged in \(joinMs.map { "\($0) ms (\($0 / config.protocolPeriodMs) rounds)" } ?? "NOT within 600 s"), \(joinMessages) messages, \(joinBytes / 1024) KiB")

    let before = sim.bytesSent
    sim.run(forMs: 10_000)
    let steady = Double(sim.bytesSent - before) / 10 / Double(n)
    print("  steady state: \(Int(steady)) B/s sent per node (before sealing, ~45 B more per packet)")

    // 1,000 writes (a tenth of them deletions) from random nodes within one second, under 10%
    // loss: pushes reach most nodes at once, anti-entropy (one digest per node per second)
    // repairs the rest; then the tombstones wait for every node's vector.
    sim.lossRate = 0.10
    let names = (0..<n).map(NetworkSimulator.name)
    let bytesBeforeWrites = sim.bytesSent
    for i in 0..<1000 {
        let writer = names.randomElement(using: &sim.rng)!
        sim.write(on: writer, "sessions", "key-\(i % 900)", i % 10 == 9 ? nil : Array("worker-\(i % 7)".utf8))
        if i % 20 == 19 { sim.run(forMs: 50) }
    }
    func agree(_ s: NetworkSimulator) -> Bool {
        let first = s.nodes["n0"]!.values(of: "sessions")
        return s.nodes.values.allSatisfy { $0.values(of: "sessions") == first }
    }
    let replicatedMs = sim.run(until: agree, limitMs: 600_000)
    print("  1,000 writes (10% loss): every node agrees after \(replicatedMs.map { "\($0) ms (\($0 / 1000) anti-entropy rounds)" } ?? "NOT within 600 s"), \((sim.bytesSent - bytesBeforeWrites) / 1024) KiB")
    let collectedMs = sim.run(until: { s in s.nodes.values.allSatisfy { $0.replicator.state.tombstoneCount == 0 } }, limitMs: 1_200_000)
    print("  their tombstones are collected everywhere \(collectedMs.map { "\($0) ms" } ?? "NOT within 1200 s") later")
    sim.lossRate = 0
    func work(_ s: NetworkSimulator) -> String {
        let c = s.nodes.values.map(\.counters)
        return "digests \(c.reduce(0) { $0 + $1.digests }), answers \(c.reduce(0) { $0 + $1.answers }), full states \(c.reduce(0) { $0 + $1.fullStates })"
    }
    print("  replication work so far: \(work(sim))")

    sim.crash("n7")
    let bytesAtCrash = sim.bytesSent
    let deadMs = sim.run(until: { s in s.nodes.filter { $0.key != "n7" }.allSatisfy { $0.value.status(of: "n7") == .dead } }, limitMs: 120_000)
    print("  a crash is known everywhere after \(deadMs.map { "\($0) ms (\($0 / config.protocolPeriodMs) rounds)" } ?? "NOT within 120 s"), \((sim.bytesSent - bytesAtCrash) / 1024) KiB meanwhile; \(work(sim))")
    print(String(format: "  (%.1f s of wall time)", Date().timeIntervalSince(wallStart)))
}
