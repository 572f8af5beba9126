import Primitives
import Policies
import Testing

private func workers(_ n: Int, unavailable: Set<Int> = []) -> [WorkerCandidate] {
    (0..<n).map { WorkerCandidate(id: "w\($0)", url: "http://w\($0)", isAvailable: !unavailable.contains($0)) }
}

@Suite struct RoundRobinTests {
    @Test func cyclesThroughWorkersInOrder() {
        var p = RoundRobinPolicy()
        var rng = SplitMix64(seed: 1)
        let picks = (0..<7).map { _ in p.select(RoutingRequest(), from: workers(3), using: &rng)?.index }
        #expect(picks == [0, 1, 2, 0, 1, 2, 0])
    }

    @Test func skipsUnavailableWorkers() {
        var p = RoundRobinPolicy()
        var rng = SplitMix64(seed: 1)
        let ws = workers(4, unavailable: [1, 2])
        let picks = (0..<4).map { _ in p.select(RoutingRequest(), from: ws, using: &rng)?.index }
        #expect(picks == [0, 3, 0, 3])
    }

    @Test func noneAvailableGivesNil() {
        var p = RoundRobinPolicy()
        var rng = SplitMix64(seed: 1)
        #expect(p.select(RoutingRequest(), from: [], using: &rng) == nil)
        #expect(p.select(RoutingRequest(), from: workers(2, unavailable: [0, 1]), using: &rng) == nil)
    }

    @Test func survivesWorkerListShrinking() {
        var p = RoundRobinPolicy()
        var rng = SplitMix64(seed: 1)
        _ = p.select(RoutingRequest(), from: workers(5), using: &rng)
        _ = p.select(RoutingRequest(), from: workers(5), using: &rng)
        _ = p.select(RoutingRequest(), from: workers(5), using: &rng)
        let pick = p.select(RoutingRequest(), from: workers(2), using: &rng)?.index
        #expect(pick != nil && pick! < 2)
    }
}

@Suite struct RandomPolicyTests {
    @Test func spreadsEvenlyWithSeededRandomness() {
        var p = RandomPolicy()
        var rng = SplitMix64(seed: 42)
        var counts = [0, 0, 0, 0]
        for _ in 0..<40_000 { counts[p.select(RoutingRequest(), from: workers(4), using: &rng)!.index] += 1 }
        for c in counts { #expect(abs(c - 10_000) < 500, "counts \(counts)") }
    }

    @Test func neverPicksUnavailable() {
        var p = RandomPolicy()
        var rng = SplitMix64(seed: 7)
        let ws = workers(5, unavailable: [0, 2, 4])
        for _ in 0..<1000 {
            let i = p.select(RoutingRequest(), from: ws, using: &rng)!.index
            #expect(i == 1 || i == 3)
        }
        #expect(p.select(RoutingRequest(), from: workers(3, unavailable: [0, 1, 2]), using: &rng) == nil)
    }

    @Test func sameSeedSameDecisions() {
        var a = RandomPolicy(), b = RandomPolicy()
        var r1 = SplitMix64(seed: 99), r2 = SplitMix64(seed: 99)
        let x = (0..<50).map { _ in a.select(RoutingRequest(), from: workers(6), using: &r1)?.index }
        let y = (0..<50).map { _ in b.select(RoutingRequest(), from: workers(6), using: &r2)?.index }
        #expect(x == y)
    }
}

@Suite struct PolicyNameTests {
    @Test func everyPolicyIsConstructibleUnderItsName() {
        for name in PolicyName.allCases { #expect(name.make().name == name.rawValue) }
    }

    @Test func pdPoliciesInheritAsSeed002Says() {
        #expect(resolvePDPolicies(policy: .round_robin, prefill: nil, decode: nil) == (.round_robin, .round_robin))
        #expect(resolvePDPolicies(policy: .round_robin, prefill: .cache_aware, decode: nil) == (.cache_aware, .round_robin))
        #expect(resolvePDPolicies(policy: .random, prefill: nil, decode: .power_of_two) == (.random, .power_of_two))
        #expect(resolvePDPolicies(policy: .random, prefill: .cache_aware, decode: .round_robin) == (.cache_aware, .round_robin))
    }
}
