import MeshCore
import MeshSimulation
import Testing

/// The deterministic simulation of SWIM: dozens of nodes on a virtual clock over a lossy,
/// partitionable network. Every test names its seed in its messages, so a failure replays.
@Suite struct SwimSimulationTests {
    var config: SwimNode.Config {
        var c = SwimNode.Config()
        c.protocolPeriodMs = 500
        c.probeTimeoutMs = 200
        c.pushPullIntervalMs = 5_000
        c.reapAfterMs = 120_000
        return c
    }

    /// `n` nodes that join through n0, started 20 ms apart.
    func cluster(_ n: Int, seed: UInt64) -> Simulator {
        var sim = Simulator(seed: seed)
        for i in 0..<n {
            sim.addNode(Simulator.name(i), seeds: i == 0 ? [] : [Simulator.name(0)], config: config)
            sim.run(forMs: 20)
        }
        return sim
    }

    func names(_ n: Int) -> Set<String> { Set((0..<n).map(Simulator.name)) }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func fiftyNodesConverge(seed: UInt64) {
        var sim = cluster(50, seed: seed)
        let took = sim.run(until: { $0.converged(alive: names(50)) }, limitMs: 60_000)
        #expect(took != nil, "seed \(seed): 50 nodes did not converge in 60 s of virtual time")
    }

    /// Routers that start knowing no peer (their pods not yet listed) form one cluster once
    /// discovery hands them peers at run time, each told only of the others' addresses; the
    /// join goes out at the next tick, not a join retry later.
    @Test(arguments: [21, 22] as [UInt64])
    func seedsGivenAtRunTimeFormOneCluster(seed: UInt64) {
        var config = self.config
        config.joinRetryMs = 60_000
        var sim = Simulator(seed: seed)
        for i in 0..<5 { sim.addNode(Simulator.name(i), seeds: [], config: config) }
        sim.run(forMs: 2_000)
        #expect(!sim.converged(alive: names(5)), "seed \(seed): nodes without seeds found each other")
        for i in 0..<5 { sim.nodes[Simulator.name(i)]?.setSeeds((0..<5).map(Simulator.name)) }
        #expect(sim.nodes["n0"]?.swim.joinTargets == ["n1", "n2", "n3", "n4"], "a node's own address is not a join target")
        let took = sim.run(until: { $0.converged(alive: names(5)) }, limitMs: 10_000)
        #expect(took != nil, "seed \(seed): not one cluster 10 s after the seeds were given (join retry is 60 s)")
    }

    @Test(arguments: [4, 5] as [UInt64])
    func aCrashedNodeIsDeclaredDeadEverywhereWithinTheBound(seed: UInt64) {
        var sim = cluster(50, seed: seed)
        _ = sim.run(until: { $0.converged(alive: names(50)) }, limitMs: 60_000)
        sim.crash("n17")
        // Bound: a probe round, then the longest suspicion timeout without confirmations
        // (6 × 4 × log10(50) × period ≈ 20 s), plus dissemination.
        let took = sim.run(until: { s in
            s.nodes.filter { $0.key != "n17" }.allSatisfy { $0.value.status(of: "n17") == .dead }
        }, limitMs: 30_000)
        #expect(took != nil, "seed \(seed): n17 not dead everywhere within 30 s")
        #expect(took.map { $0 <= 30_000 } ?? false)
        let alive = names(50).subtracting(["n17"])
        #expect(sim.converged(alive: alive), "seed \(seed): someone else was lost on the way")
    }

    @Test(arguments: [6, 7] as [UInt64])
    func noLiveNodeIsDeclaredDeadUnderTenPercentLoss(seed: UInt64) {
        var sim = cluster(50, seed: seed)
        _ = sim.run(until: { $0.converged(alive: names(50)) }, limitMs: 60_000)
        sim.lossRate = 0.10
        sim.duplicateRate = 0.02
        sim.delayMs = 1...80
        var falseDeaths: Set<String> = []
        for _ in 0..<600 {  // 60 s of virtual time, checked every 100 ms
            sim.run(forMs: 100)
            for node in sim.nodes.values {
                for m in node.members.values where m.status == .dead { falseDeaths.insert(m.name) }
            }
        }
        #expect(falseDeaths.isEmpty, "seed \(seed): declared dead under 10% loss: \(falseDeaths.sorted())")
    }

    @Test(arguments: [8, 9] as [UInt64])
    func aPartitionHeals(seed: UInt64) {
        var sim = cluster(30, seed: seed)
        _ = sim.run(until: { $0.converged(alive: names(30)) }, limitMs: 60_000)
        let left = (0..<15).map(Simulator.name), right = (15..<30).map(Simulator.name)
        sim.partition(left, right)
        // Each side declares the other dead.
        let split = sim.run(until: { s in
            s.nodes["n0"]!.status(of: "n29") == .dead && s.nodes["n29"]!.status(of: "n0") == .dead
        }, limitMs: 60_000)
        #expect(split != nil, "seed \(seed): the partition was never noticed")
        sim.heal()
        let healed = sim.run(until: { $0.converged(alive: names(30)) }, limitMs: 90_000)
        #expect(healed != nil, "seed \(seed): the partition did not heal within 90 s")
    }

    @Test func aLeavingNodeIsMarkedLeftNotDead() {
        var sim = cluster(20, seed: 10)
        _ = sim.run(until: { $0.converged(alive: names(20)) }, limitMs: 60_000)
        var leaver = sim.nodes["n5"]!
        let notes = leaver.leave(now: sim.now)
        sim.nodes["n5"] = leaver
        for case .send(let to, let message) in notes {
            sim.queue.push(.init(at: sim.now + 1, order: 0, to: to, from: "n5", message: message))
        }
        let took = sim.run(until: { s in s.nodes.filter { $0.key != "n5" }.allSatisfy { $0.value.status(of: "n5") == .left } }, limitMs: 10_000)
        #expect(took != nil && took! <= 5_000, "left seen everywhere within \(String(describing: took)) ms")
        #expect(!sim.nodes.values.contains { $0.status(of: "n5") == .dead })
    }

    @Test func aRestartedNodeRejoinsUnderItsName() {
        var sim = cluster(20, seed: 11)
        _ = sim.run(until: { $0.converged(alive: names(20)) }, limitMs: 60_000)
        sim.crash("n9")
        _ = sim.run(until: { s in s.nodes["n0"]!.status(of: "n9") == .dead }, limitMs: 40_000)
        #expect(sim.nodes["n0"]!.status(of: "n9") == .dead)
        sim.addNode("n9", seeds: ["n0"], config: config)  // a new process: new generation
        let took = sim.run(until: { $0.converged(alive: names(20)) }, limitMs: 20_000)
        let views = sim.nodes.keys.sorted().map { k in "\(k): " + sim.nodes[k]!.members.values.filter { $0.status != .alive }.map { "\($0.name)=\($0.status.rawValue)" }.joined(separator: ",") + " (\(sim.nodes[k]!.members.count) known)" }
        #expect(took != nil, "the restarted n9 rejoined in \(String(describing: took)) ms; views: \(views)")
    }

    @Test func aNodeStartedBeforeItsSeedJoinsOnceTheSeedIsUp() {
        var sim = Simulator(seed: 12)
        sim.addNode("n1", seeds: ["n0"], config: config)
        sim.addNode("n2", seeds: ["n0"], config: config)
        sim.run(forMs: 5_000)  // n0 does not exist yet: joins go nowhere
        #expect(sim.nodes["n1"]!.members.isEmpty)
        sim.addNode("n0", seeds: [], config: config)
        let took = sim.run(until: { $0.converged(alive: ["n0", "n1", "n2"]) }, limitMs: 10_000)
        #expect(took != nil)
    }

    @Test func theSameSeedReplaysTheSameRun() {
        func fingerprint(_ seed: UInt64) -> [String] {
            var sim = cluster(20, seed: seed)
            sim.lossRate = 0.05
            sim.run(forMs: 20_000)
            sim.crash("n3")
            sim.run(forMs: 20_000)
            return sim.nodes.keys.sorted().map { k in "\(k):" + sim.nodes[k]!.members.values.map { "\($0.name)=\($0.status.rawValue)/\($0.incarnation)" }.sorted().joined(separator: ",") }
                + ["sent \(sim.messagesSent)"]
        }
        #expect(fingerprint(42) == fingerprint(42))
        #expect(fingerprint(42) != fingerprint(43))
    }

    /// A restarted router learns the whole table from its seed's answer. It gossips on what is
    /// news (itself), not the 59 members everyone already had: regossiped, those cost a dozen
    /// transmissions each, per restart (at 1,000 routers, most of the mesh's traffic).
    @Test func aJoinerDoesNotGossipTheTableItWasGiven() {
        var sim = cluster(60, seed: 13)
        _ = sim.run(until: { $0.converged(alive: names(60)) }, limitMs: 60_000)
        sim.run(forMs: 60_000)  // the start's own gossip drains
        sim.crash("n9")
        _ = sim.run(until: { s in s.nodes["n0"]!.status(of: "n9") == .dead }, limitMs: 40_000)
        sim.addNode("n9", seeds: ["n0"], config: config)
        let before = sim.gossipSent["n9", default: 0]
        let took = sim.run(until: { $0.converged(alive: names(60)) }, limitMs: 20_000)
        sim.run(forMs: 20_000)
        let sent = sim.gossipSent["n9", default: 0] - before
        #expect(took != nil, "n9 rejoined")
        #expect(sent < 59, "the joiner piggybacked \(sent) claims about others (its table regossiped: several hundred)")
    }

    /// Push-pull between members that agree is 64 bucket hashes one way, and nothing back;
    /// where they disagree, only the members of the buckets that differ travel.
    @Test func pushPullSendsOnlyTheBucketsThatDiffer() {
        var sim = cluster(40, seed: 14)
        _ = sim.run(until: { $0.converged(alive: names(40)) }, limitMs: 60_000)
        sim.run(forMs: 60_000)
        let quiet = sim.bytesByKind["sync-buckets", default: 0]
        sim.run(forMs: 30_000)
        #expect(sim.bytesByKind["sync-buckets", default: 0] == quiet, "agreeing tables exchanged members")
        #expect(sim.bytesByKind["sync-digest", default: 0] > 0, "push-pull ran")

        // n3 is cut off from everyone long enough to be declared dead, then heals: push-pull
        // (one time in four aimed at a dead member) and gossip bring it back everywhere.
        let rest = names(40).subtracting(["n3"])
        sim.partition(["n3"], Array(rest))
        _ = sim.run(until: { s in rest.allSatisfy { s.nodes[$0]!.status(of: "n3") == .dead } }, limitMs: 60_000)
        sim.heal()
        let healed = sim.run(until: { $0.converged(alive: names(40)) }, limitMs: 120_000)
        #expect(healed != nil, "n3 alive everywhere again")
        #expect(sim.bytesByKind["sync-buckets", default: 0] > quiet, "the difference travelled as buckets")
    }

    /// The shell's timer sleeps until `MeshNode.nextDeadline` instead of ticking every 50 ms
    /// (an idle router's CPU is its wake-ups). Ticked only at their deadlines, 20 nodes find a
    /// crash as fast, with a fraction of the ticks.
    @Test func tickingOnlyAtDeadlinesFindsACrashAsFastWithFewerTicks() {
        func run(deadlines: Bool) -> (detected: UInt64?, ticks: Int) {
            var sim = cluster(20, seed: 15)
            sim.tickOnlyAtDeadlines = deadlines
            _ = sim.run(until: { $0.converged(alive: names(20)) }, limitMs: 60_000)
            sim.run(forMs: 10_000)
            let before = sim.ticksRun
            sim.crash("n4")
            let detected = sim.run(until: { s in s.nodes.keys.filter { $0 != "n4" }.allSatisfy { s.nodes[$0]!.status(of: "n4") == .dead } }, limitMs: 60_000)
            return (detected, sim.ticksRun - before)
        }
        let every = run(deadlines: false), atDeadlines = run(deadlines: true)
        #expect(every.detected != nil && atDeadlines.detected != nil, "the crash was found both ways")
        if let a = atDeadlines.detected, let e = every.detected {
            #expect(a <= e + 1_000, "at deadlines \(a) ms, every tick \(e) ms")
        }
        #expect(atDeadlines.ticks * 3 < every.ticks, "ticks: \(atDeadlines.ticks) at deadlines, \(every.ticks) every 50 ms")
    }
}
