import Foundation
import MeshCore

// smg-mesh-bench: the SWIM core on the deterministic simulated network, at sizes beyond the
// test suite's. Prints virtual time, protocol rounds and bytes to converge after a join storm,
// to declare a crashed node dead everywhere, and the steady-state traffic per node.
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

    sim.crash("n7")
    let bytesAtCrash = sim.bytesSent
    let deadMs = sim.run(until: { s in s.nodes.filter { $0.key != "n7" }.allSatisfy { $0.value.status(of: "n7") == .dead } }, limitMs: 120_000)
    print("  a crash is known everywhere after \(deadMs.map { "\($0) ms (\($0 / config.protocolPeriodMs) rounds)" } ?? "NOT within 120 s"), \((sim.bytesSent - bytesAtCrash) / 1024) KiB meanwhile")
    print(String(format: "  (%.1f s of wall time)", Date().timeIntervalSince(wallStart)))
}
