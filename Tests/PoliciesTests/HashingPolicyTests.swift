import Primitives
import Policies
import Testing

private func workers(_ n: Int, loads: [Int] = [], unavailable: Set<Int> = [], prefix: String = "w") -> [WorkerCandidate] {
    (0..<n).map { WorkerCandidate(id: "\(prefix)\($0)", url: "http://\(prefix)\($0)", isAvailable: !unavailable.contains($0), inFlight: $0 < loads.count ? loads[$0] : 0) }
}

@Suite struct HashRingTests {
    /// Fraction of 20,000 keys whose owner changes between two member lists.
    func moved(_ before: [String], _ after: [String]) -> Double {
        let a = HashRing(members: before), b = HashRing(members: after)
        var moved = 0
        for k in 0..<20_000 {
            let h = PromptBlocks.hash(Array("key-\(k)".utf8))
            if a.members[a.owner(of: h)!] != b.members[b.owner(of: h)!] { moved += 1 }
        }
        return Double(moved) / 20_000
    }

    @Test func joiningMovesAboutOneNthOfTheKeys() {
        let eight = (0..<8).map { "worker-\($0)" }
        let fraction = moved(eight, eight + ["worker-8"])
        #expect(fraction > 0.07 && fraction < 0.16, "moved \(fraction), ideal 1/9 = 0.111")
    }

    @Test func leavingMovesOnlyTheLeaversKeys() {
        let eight = (0..<8).map { "worker-\($0)" }
        let fraction = moved(eight, eight.filter { $0 != "worker-3" })
        #expect(fraction > 0.08 && fraction < 0.17, "moved \(fraction), ideal 1/8 = 0.125")
    }

    @Test func keysSpreadEvenly() {
        let ring = HashRing(members: (0..<4).map { "worker-\($0)" })
        var counts = [0, 0, 0, 0]
        for k in 0..<40_000 { counts[ring.owner(of: PromptBlocks.hash(Array("k\(k)".utf8)))!] += 1 }
        for c in counts { #expect(c > 7_000 && c < 13_000, "\(counts)") }
    }

    @Test func walkVisitsEveryMemberOnce() {
        let ring = HashRing(members: ["a", "b", "c"])
        #expect(Set(ring.walk(from: 12345)) == [0, 1, 2])
        #expect(HashRing(members: []).owner(of: 1) == nil)
    }
}

@Suite struct ConsistentHashingTests {
    @Test func aRoutingKeyAlwaysLandsOnTheSameWorker() {
        var p = ConsistentHashingPolicy()
        var rng = SplitMix64(seed: 1)
        for s in 0..<50 {
            let r = RoutingRequest(routingKey: "session-\(s)")
            let first = p.select(r, from: workers(4), using: &rng)!
            #expect(first.reason == .hashRing)
            for _ in 0..<3 { #expect(p.select(r, from: workers(4), using: &rng) == first) }
        }
    }

    @Test func targetWorkerPinsAndFallsBackWhenInvalid() {
        var p = ConsistentHashingPolicy()
        var rng = SplitMix64(seed: 1)
        #expect(p.select(RoutingRequest(targetWorker: 2), from: workers(3), using: &rng) == Selection(2, .pinned))
        #expect(p.select(RoutingRequest(routingKey: "k", targetWorker: 9), from: workers(3), using: &rng)?.reason == .hashRing)
        #expect(p.select(RoutingRequest(routingKey: "k", targetWorker: 1), from: workers(3, unavailable: [1]), using: &rng)?.index != 1)
    }

    @Test func withoutAKeyItIsRandom() {
        var p = ConsistentHashingPolicy()
        var rng = SplitMix64(seed: 1)
        var seen = Set<Int>()
        for _ in 0..<100 {
            let s = p.select(RoutingRequest(), from: workers(3), using: &rng)!
            #expect(s.reason == .fallback)
            seen.insert(s.index)
        }
        #expect(seen == [0, 1, 2])
    }

    @Test func anUnavailableOwnerHandsOnlyItsKeysOn() {
        var p = ConsistentHashingPolicy()
        var rng = SplitMix64(seed: 1)
        let keys = (0..<400).map { "s\($0)" }
        let before = keys.map { p.select(RoutingRequest(routingKey: $0), from: workers(4), using: &rng)!.index }
        let after = keys.map { p.select(RoutingRequest(routingKey: $0), from: workers(4, unavailable: [2]), using: &rng)!.index }
        for (b, a) in zip(before, after) {
            if b != 2 { #expect(a == b) } else { #expect(a != 2) }
        }
    }
}

@Suite struct PrefixHashTests {
    @Test func samePrefixSameWorkerAndOnlyThePrefixCounts() {
        var p = PrefixHashPolicy(prefixLength: 16, loadFactor: 1.25)
        var rng = SplitMix64(seed: 1)
        let a = p.select(RoutingRequest(routingText: Array("0123456789abcdef-tail-one".utf8)), from: workers(4), using: &rng)!
        let b = p.select(RoutingRequest(routingText: Array("0123456789abcdef-another".utf8)), from: workers(4), using: &rng)!
        #expect(a == b)
        #expect(a.reason == .hashRing)
    }

    @Test func anOverloadedOwnerSpillsToTheNextOnTheRing() {
        var p = PrefixHashPolicy(prefixLength: 8, loadFactor: 1.25)
        var rng = SplitMix64(seed: 1)
        let text = Array("prefix!!".utf8)
        let home = p.select(RoutingRequest(routingText: text), from: workers(4), using: &rng)!.index
        var loads = [1, 1, 1, 1]
        loads[home] = 10  // capacity = ceil(1.25 × 14 / 4) = 5
        let s = p.select(RoutingRequest(routingText: text), from: workers(4, loads: loads), using: &rng)!
        #expect(s.index != home)
        #expect(s.reason == .boundedLoadSpill)
    }

    @Test func boundedLoadsSpreadAHotPrefix() {
        var p = PrefixHashPolicy(prefixLength: 8, loadFactor: 1.25)
        var rng = SplitMix64(seed: 1)
        var loads = [0, 0, 0, 0]
        for _ in 0..<40 {
            let s = p.select(RoutingRequest(routingText: Array("hotspot!".utf8)), from: workers(4, loads: loads), using: &rng)!
            loads[s.index] += 1  // requests stay in flight
        }
        #expect(loads.max()! <= Int((1.25 * 40 / 4).rounded(.up)), "\(loads)")
    }
}

@Suite struct ManualPolicyTests {
    @Test func keysStickToTheirWorker() {
        var p = ManualPolicy(mode: .random)
        var rng = SplitMix64(seed: 1)
        let first = p.select(RoutingRequest(routingKey: "user-1", now: 1), from: workers(5), using: &rng)!
        #expect(first.reason == .newAssignment)
        for t in 2..<20 { #expect(p.select(RoutingRequest(routingKey: "user-1", now: UInt64(t)), from: workers(5), using: &rng) == Selection(first.index, .sticky)) }
    }

    @Test func minLoadAndMinGroupAssignments() {
        var rng = SplitMix64(seed: 1)
        var byLoad = ManualPolicy(mode: .min_load)
        #expect(byLoad.select(RoutingRequest(routingKey: "a"), from: workers(3, loads: [5, 1, 3]), using: &rng)!.index == 1)
        var byGroup = ManualPolicy(mode: .min_group)
        var counts = [0, 0, 0]
        for k in 0..<30 { counts[byGroup.select(RoutingRequest(routingKey: "k\(k)"), from: workers(3), using: &rng)!.index] += 1 }
        #expect(counts == [10, 10, 10])
    }

    @Test func aKeyWhoseWorkerDiedIsReassigned() {
        var p = ManualPolicy()
        var rng = SplitMix64(seed: 1)
        let home = p.select(RoutingRequest(routingKey: "k", now: 1), from: workers(3), using: &rng)!.index
        let moved = p.select(RoutingRequest(routingKey: "k", now: 2), from: workers(3, unavailable: [home]), using: &rng)!
        #expect(moved.reason == .reassigned && moved.index != home)
        #expect(p.select(RoutingRequest(routingKey: "k", now: 3), from: workers(3), using: &rng) == Selection(moved.index, .sticky), "and stays there")
        p.removeWorker(id: "w\(moved.index)")
        #expect(p.assignment(of: "k") == nil)
    }

    @Test func idleKeysAreForgotten() {
        var p = ManualPolicy(maxIdleMs: 1000)
        var rng = SplitMix64(seed: 1)
        _ = p.select(RoutingRequest(routingKey: "old", now: 0), from: workers(2), using: &rng)
        _ = p.select(RoutingRequest(routingKey: "fresh", now: 1500), from: workers(2), using: &rng)
        p.maintain(now: 2000)
        #expect(p.assignment(of: "old") == nil)
        #expect(p.assignment(of: "fresh") != nil)
        #expect(p.stateSize == 1)
    }

    @Test func oddKeysAreBounded() {
        var p = ManualPolicy(maxKeys: 100)
        var rng = SplitMix64(seed: 1)
        let huge = String(repeating: "k", count: 1 << 20)
        let s = p.select(RoutingRequest(routingKey: huge, now: 1), from: workers(2), using: &rng)!
        #expect(p.select(RoutingRequest(routingKey: huge, now: 2), from: workers(2), using: &rng) == Selection(s.index, .sticky))
        for k in 0..<1000 { _ = p.select(RoutingRequest(routingKey: "key-\(k)", now: UInt64(k + 3)), from: workers(2), using: &rng) }
        #expect(p.stateSize <= 100)
        #expect(p.assignment(of: "key-999") != nil, "the most recent keys are kept")
        #expect(p.select(RoutingRequest(routingKey: "", now: 9), from: workers(2), using: &rng)?.reason == .fallback)
    }
}
