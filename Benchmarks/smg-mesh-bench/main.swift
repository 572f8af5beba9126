import Foundation
import MeshCore
import MeshSimulation

// smg-mesh-bench: the mesh core (`MeshNode`: SWIM and the replicated stores) on the
// deterministic simulated network, at sizes beyond the test suite's. For each size: the join
// storm (each node writing once as it starts, as a router publishes its start-up workers), the
// steady-state traffic per node (with churn: nodes crashing and coming back as new processes,
// each a new origin that writes once), and how long a write made at one node (a worker added) takes to reach every
// node. `--writes` adds the older phases: a burst of 1,000 writes under 10% loss, the
// collection of their tombstones, and a crash declared everywhere.
// Numbers are in virtual time (the protocol's, not this machine's); wall time is printed too.
// The last line is JSON, for scripts.

struct Options {
    var sizes: [Int] = []
    var churnPerMin = 0.0
    var loss = 0.0
    var steadySeconds: UInt64 = 10
    var seed: UInt64 = 1
    var writes = false
    var retireLimitSeconds: UInt64 = 900
}

func usage() -> Never {
    print("""
        smg-mesh-bench [--nodes N]... [--churn-per-min C] [--loss P] [--steady-seconds S] [--seed N] [--retire-limit S] [--writes]

          --nodes N            cluster size; repeat for several (default: 50 and 200)
          --churn-per-min C    during the steady phase, C restarts a minute across the cluster:
                               a node crashes and comes back as a new process (a new generation
                               and origin) joining through n0 (default 0)
          --loss P             fraction of messages lost, 0 to 0.5, in the steady and convergence phases (default 0)
          --steady-seconds S   length of the steady phase, virtual seconds (default 10)
          --seed N             the simulation's seed (default 1)
          --retire-limit S     how long to wait, virtual seconds, for the origins of restarted
                               processes to be retired from every vector (default 900)
          --writes             also: 1,000 writes under 10% loss, their tombstones collected, a crash detected

        The last line printed is JSON: nodes, join_s, converged_s (a write at one node known to every
        node), bytes_per_node_per_s (steady phase, before sealing), wire_bytes_per_node_per_s (the
        same with each packet's envelope and seal, ~80 bytes), churn_per_min, loss,
        origins_after_churn, retired_s (until every vector holds at most one origin per process),
        vector_origins (the most origins any node's version vector holds at the end), wall_s.
        """)
    exit(0)
}

var o = Options()
var args = Array(CommandLine.arguments.dropFirst())
while !args.isEmpty {
    let a = args.removeFirst()
    func value() -> String {
        guard !args.isEmpty else { print("smg-mesh-bench: \(a) needs a value"); exit(2) }
        return args.removeFirst()
    }
    switch a {
    case "--help", "-h": usage()
    case "--nodes": o.sizes.append(Int(value()) ?? 0)
    case "--churn-per-min": o.churnPerMin = Double(value()) ?? -1
    case "--loss": o.loss = Double(value()) ?? -1
    case "--steady-seconds": o.steadySeconds = UInt64(value()) ?? 0
    case "--seed": o.seed = UInt64(value()) ?? 1
    case "--writes": o.writes = true
    case "--retire-limit": o.retireLimitSeconds = UInt64(value()) ?? 0
    default:
        // Sizes as bare numbers, as older invocations gave them.
        guard let n = Int(a) else { print("smg-mesh-bench: unknown argument \(a) (--help)"); exit(2) }
        o.sizes.append(n)
    }
}
if o.sizes.isEmpty { o.sizes = [50, 200] }
guard o.sizes.allSatisfy({ $0 >= 2 && $0 <= 5000 }), o.churnPerMin >= 0, (0...0.5).contains(o.loss), o.steadySeconds > 0 else {
    print("smg-mesh-bench: --nodes 2 to 5000, --churn-per-min ≥ 0, --loss 0 to 0.5, --steady-seconds > 0")
    exit(2)
}

var config = SwimNode.Config()
config.protocolPeriodMs = 250
config.probeTimeoutMs = 100
config.suspicionMult = 3
config.suspicionMaxMult = 3
print("smg-mesh-bench: protocol period \(config.protocolPeriodMs) ms, probe timeout \(config.probeTimeoutMs) ms, 1–20 ms network delay, seed \(o.seed)")
var last = ""
for n in o.sizes {
    let wallStart = Date()
    var sim = NetworkSimulator(seed: o.seed)
    for i in 0..<n {
        sim.addNode(NetworkSimulator.name(i), seeds: i == 0 ? [] : [NetworkSimulator.name(0)], config: config)
    }
    let names = (0..<n).map(NetworkSimulator.name)
    let all = Set(names)
    // Each node writes once as it starts, as a router publishes its start-up workers: every
    // process is an origin in every version vector.
    for name in names { sim.write(on: name, "workers", "http://10.0.1.1:8000", Array(name.utf8)) }
    let joinMs = sim.run(until: { $0.converged(alive: all) }, limitMs: 600_000)
    let joinBytes = sim.bytesSent, joinMessages = sim.messagesSent
    print("\(n) nodes: join storm converged in \(joinMs.map { "\($0) ms (\($0 / config.protocolPeriodMs) rounds)" } ?? "NOT within 600 s"), \(joinMessages) messages, \(joinBytes / 1024) KiB")

    // Let the join storm's gossip drain before measuring: every joiner was news to every
    // member, and each piece is told a dozen times (at 1,000 nodes that takes minutes).
    let drainedMs = sim.run(until: { s in s.nodes.values.allSatisfy { $0.swim.pendingGossip == 0 } }, limitMs: 600_000)
    print("  the join storm's gossip drained \(drainedMs.map { "\($0) ms" } ?? "NOT within 600 s") later")
    // Steady state, with churn: restarts spread evenly over the phase.
    sim.lossRate = o.loss
    let before = sim.bytesSent
    let kindsBefore = sim.bytesByKind
    let messagesBefore = sim.messagesSent
    let phaseMs = o.steadySeconds * 1000
    // Each restart takes 500 ms of the phase (the node down); at most one every 600 ms.
    let restarts = min(Int((o.churnPerMin * Double(o.steadySeconds) / 60).rounded()), Int(phaseMs / 600))
    let slice = (phaseMs - UInt64(restarts) * 500) / UInt64(restarts + 1)
    var restarted = 0
    for _ in 0..<restarts {
        sim.run(forMs: slice)
        let victim = names[Int.random(in: 1..<n, using: &sim.rng)]
        sim.crash(victim)
        sim.run(forMs: 500)  // down for half a second, then a new process of the same name
        sim.addNode(victim, seeds: [NetworkSimulator.name(0)], config: config)
        sim.write(on: victim, "workers", "http://10.0.1.1:8000", Array(victim.utf8))
        restarted += 1
    }
    sim.run(forMs: phaseMs - UInt64(restarts) * (slice + 500))
    let states = sim.nodes.values.reduce((0, 0)) { ($0.0 + $1.counters.returnStates, $0.1 + $1.counters.divergenceStates) }
    print("  full states so far: \(states.0) to members back from the dead or new, \(states.1) on divergence")
    let steady = Double(sim.bytesSent - before) / Double(o.steadySeconds) / Double(n)
    let packets = Double(sim.messagesSent - messagesBefore) / Double(o.steadySeconds) / Double(n)
    let wire = steady + packets * Double(NetworkSimulator.packetOverhead)
    let kinds = sim.bytesByKind.map { ($0.key, $0.value - (kindsBefore[$0.key] ?? 0)) }.filter { $0.1 > 0 }.sorted { $0.1 > $1.1 }
    let perKind = kinds.map { "\($0.0) \(Int(Double($0.1) / Double(o.steadySeconds) / Double(n)))" }.joined(separator: ", ")
    print("  steady state\(restarts > 0 ? " with \(restarted) restarts" : "")\(o.loss > 0 ? ", \(Int(o.loss * 100))% loss" : ""): \(Int(steady)) B/s sent per node before sealing (\(Int(wire)) B/s with envelopes and seals, \(String(format: "%.1f", packets)) packets/s): \(perKind)")

    // A worker added at one node: how long until every node has it.
    let writer = names[Int.random(in: 0..<n, using: &sim.rng)]
    sim.write(on: writer, "workers", "http://10.0.0.1:8000", Array("{}".utf8))
    let convergedMs = sim.run(until: { s in
        s.nodes.filter { !s.crashed.contains($0.key) }.allSatisfy { $0.value.values(of: "workers")["http://10.0.0.1:8000"] != nil }
    }, limitMs: 120_000)
    print("  a write at one node is known everywhere after \(convergedMs.map { "\($0) ms" } ?? "NOT within 120 s")")
    func mostOrigins(_ s: NetworkSimulator) -> Int { s.nodes.values.map { $0.replicator.vector.counters.count }.max() ?? 0 }
    let originsAfterChurn = mostOrigins(sim)
    // The restarted processes' old origins are retired once every live node has seen their
    // last writes (each node hears every peer's vector within about n/2 seconds).
    let retiredMs = sim.run(until: { mostOrigins($0) <= n }, limitMs: o.retireLimitSeconds * 1000)
    let origins = mostOrigins(sim)
    print("  version vectors held up to \(originsAfterChurn) origins after the churn; \(origins) (\(n) processes) \(retiredMs.map { "\($0) ms" } ?? "NOT within \(o.retireLimitSeconds) s") later")

    if o.writes {
        // 1,000 writes (a tenth of them deletions) from random nodes within one second, under 10%
        // loss: pushes reach most nodes at once, anti-entropy (one digest per node per second)
        // repairs the rest; then the tombstones wait for every node's vector.
        sim.lossRate = 0.10
        let bytesBeforeWrites = sim.bytesSent
        for i in 0..<1000 {
            let w = names.randomElement(using: &sim.rng)!
            sim.write(on: w, "sessions", "key-\(i % 900)", i % 10 == 9 ? nil : Array("worker-\(i % 7)".utf8))
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
    }
    let wall = Date().timeIntervalSince(wallStart)
    print(String(format: "  (%.1f s of wall time)", wall))
    func seconds(_ ms: UInt64?) -> String { ms.map { String(format: "%.3f", Double($0) / 1000) } ?? "null" }
    last = #"{"nodes":\#(n),"join_s":\#(seconds(joinMs)),"converged_s":\#(seconds(convergedMs)),"bytes_per_node_per_s":\#(Int(steady)),"#
        + #""wire_bytes_per_node_per_s":\#(Int(wire)),"churn_per_min":\#(o.churnPerMin),"restarts":\#(restarted),"loss":\#(o.loss),"#
        + #""origins_after_churn":\#(originsAfterChurn),"retired_s":\#(seconds(retiredMs)),"vector_origins":\#(origins),"wall_s":\#(String(format: "%.1f", wall))}"#
}
print(last)
