import Primitives
import Policies
import Testing

private func workers(_ loads: [Int], unavailable: Set<Int> = []) -> [WorkerCandidate] {
    loads.enumerated().map { WorkerCandidate(id: "w\($0.offset)", url: "http://w\($0.offset)", isAvailable: !unavailable.contains($0.offset), inFlight: $0.element) }
}

private func text(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite struct CacheAwareTests {
    /// A policy with small blocks so short test prompts span several of them.
    func policy(threshold: Double = 0.5, abs: Int = 32, rel: Double = 1.5, maxTreeSize: Int = 1 << 20) -> CacheAwarePolicy {
        var c = CacheAwareConfig()
        c.cacheThreshold = threshold
        c.balanceAbsThreshold = abs
        c.balanceRelThreshold = rel
        c.maxTreeSize = maxTreeSize
        c.blockSize = 4
        return CacheAwarePolicy(c)
    }

    @Test func imbalanceNeedsBothThresholds() {
        #expect(!CacheAwarePolicy.isImbalanced(loads: [0, 32], absThreshold: 32, relThreshold: 1.5), "difference not above abs")
        #expect(CacheAwarePolicy.isImbalanced(loads: [0, 33], absThreshold: 32, relThreshold: 1.5))
        #expect(!CacheAwarePolicy.isImbalanced(loads: [100, 140], absThreshold: 32, relThreshold: 1.5), "140 is not above 1.5 × 100")
        #expect(CacheAwarePolicy.isImbalanced(loads: [100, 151], absThreshold: 32, relThreshold: 1.5))
        #expect(!CacheAwarePolicy.isImbalanced(loads: [], absThreshold: 0, relThreshold: 1))
    }

    @Test func aRepeatedPromptFollowsItsWorker() {
        var p = policy()
        var rng = SplitMix64(seed: 1)
        let prompt = text("You are a helpful assistant. Tell me about routers.")
        let first = p.select(RoutingRequest(routingText: prompt, now: 1), from: workers([0, 0, 0]), using: &rng)!
        #expect(first.reason == .cacheMiss)
        for t in 2..<10 {
            let again = p.select(RoutingRequest(routingText: prompt + text(" more \(t)"), now: UInt64(t)), from: workers([0, 0, 0]), using: &rng)!
            #expect(again == Selection(first.index, .cacheHit))
        }
    }

    @Test func aMissGoesToTheWorkerHoldingTheLeast() {
        var p = policy()
        var rng = SplitMix64(seed: 1)
        let w = workers([0, 0, 0])
        let a = p.select(RoutingRequest(routingText: text(String(repeating: "a", count: 400)), now: 1), from: w, using: &rng)!
        let b = p.select(RoutingRequest(routingText: text(String(repeating: "b", count: 200)), now: 2), from: w, using: &rng)!
        let c = p.select(RoutingRequest(routingText: text(String(repeating: "c", count: 40)), now: 3), from: w, using: &rng)!
        #expect(Set([a.index, b.index, c.index]).count == 3, "each new prompt went to an empty worker")
        let d = p.select(RoutingRequest(routingText: text(String(repeating: "d", count: 40)), now: 4), from: w, using: &rng)!
        #expect(d == Selection(c.index, .cacheMiss), "the worker holding 40 bytes has the most spare cache")
    }

    @Test func belowTheThresholdTheCacheIsIgnored() {
        var p = policy(threshold: 0.8)
        var rng = SplitMix64(seed: 1)
        let w = workers([0, 0])
        let base = p.select(RoutingRequest(routingText: text("0123456789abcdef"), now: 1), from: w, using: &rng)!
        // Half of this prompt is cached on `base`; 0.5 < 0.8, so it goes by spare cache instead.
        let other = p.select(RoutingRequest(routingText: text("0123456789abcdefXXXXXXXXXXXXXXXX"), now: 2), from: w, using: &rng)!
        #expect(other == Selection(1 - base.index, .cacheMiss))
    }

    @Test func imbalanceOverridesTheCache() {
        var p = policy(abs: 4, rel: 1.5)
        var rng = SplitMix64(seed: 1)
        let prompt = text("a long shared system prompt for everyone")
        let home = p.select(RoutingRequest(routingText: prompt, now: 1), from: workers([0, 0]), using: &rng)!.index
        var loads = [0, 0]
        loads[home] = 10
        let s = p.select(RoutingRequest(routingText: prompt, now: 2), from: workers(loads), using: &rng)!
        #expect(s == Selection(1 - home, .imbalance))
        // Just under the absolute threshold it is balanced again and the cache wins.
        loads[home] = 4
        #expect(p.select(RoutingRequest(routingText: prompt, now: 3), from: workers(loads), using: &rng)!.reason == .cacheHit)
    }

    @Test func unavailableOwnersAreNotFollowed() {
        var p = policy()
        var rng = SplitMix64(seed: 1)
        let prompt = text("conversation history that is long enough")
        let home = p.select(RoutingRequest(routingText: prompt, now: 1), from: workers([0, 0]), using: &rng)!.index
        let s = p.select(RoutingRequest(routingText: prompt, now: 2), from: workers([0, 0], unavailable: [home]), using: &rng)!
        #expect(s.index == 1 - home)
        #expect(p.select(RoutingRequest(routingText: prompt, now: 3), from: workers([0, 0], unavailable: [0, 1]), using: &rng) == nil)
    }

    @Test func removingAWorkerPurgesItsPrefixes() {
        var p = policy()
        var rng = SplitMix64(seed: 1)
        let prompt = text("the same prompt, over and over again")
        let home = p.select(RoutingRequest(routingText: prompt, now: 1), from: workers([0, 0]), using: &rng)!.index
        p.removeWorker(id: "w\(home)")
        #expect(p.stateSize == 0)
        let s = p.select(RoutingRequest(routingText: prompt, now: 2), from: workers([0, 0]), using: &rng)!
        #expect(s.reason == .cacheMiss)
    }

    @Test func evictionKeepsEachWorkerUnderTheBound() {
        var p = policy(maxTreeSize: 400)
        var rng = SplitMix64(seed: 3)
        for i in 0..<500 {
            _ = p.select(RoutingRequest(routingText: text("prompt \(i) " + String(repeating: "x", count: i % 50)), now: UInt64(i)), from: workers([0, 0, 0]), using: &rng)
        }
        p.maintain(now: 1000)
        #expect(p.tree.ownerSizes.allSatisfy { $0 * 4 <= 400 })
    }

    @Test func theTreeNeverGrowsFarPastItsBoundBetweenEvictions() {
        var p = policy(maxTreeSize: 4096)
        var rng = SplitMix64(seed: 5)
        for i in 0..<2000 {
            _ = p.select(RoutingRequest(routingText: text("unique prompt \(i) " + String(repeating: "y", count: 200)), now: UInt64(i)), from: workers([0]), using: &rng)
        }
        #expect(p.tree.ownerSizes[0] * 4 <= 2 * 4096 + 300)
    }

    @Test func badPromptsNeverCrash() {
        var p = policy()
        var rng = SplitMix64(seed: 9)
        let w = workers([0, 0])
        #expect(p.select(RoutingRequest(routingText: [], now: 1), from: w, using: &rng) != nil)
        #expect(p.select(RoutingRequest(routingText: [0xFF, 0xFE, 0x00, 0xC3], now: 2), from: w, using: &rng) != nil)
        // Larger than the 1 MiB bound: routed, then evicted at once rather than kept.
        let huge = [UInt8](repeating: 0x61, count: 4 << 20)
        #expect(p.select(RoutingRequest(routingText: huge, now: 3), from: w, using: &rng) != nil)
        #expect(p.stateSize <= 2 << 20)
        // Within the bound, a big prompt is remembered like any other.
        let big = [UInt8](repeating: 0x62, count: 512 << 10)
        _ = p.select(RoutingRequest(routingText: big, now: 4), from: w, using: &rng)
        #expect(p.select(RoutingRequest(routingText: big, now: 5), from: w, using: &rng)?.reason == .cacheHit)
        #expect(p.select(RoutingRequest(routingText: [1, 2, 3], now: 5), from: [], using: &rng) == nil)
    }

    @Test func summariesLetAnotherRouterFollowTheSameWorkers() {
        var config = CacheAwareConfig()
        config.blockSize = 4
        config.recordsSummaries = true
        var a = CacheAwarePolicy(config)
        var b = CacheAwarePolicy(config)
        var rng = SplitMix64(seed: 4)
        let w = workers([0, 0, 0])
        var homes: [String: Int] = [:]
        for s in 0..<12 {
            let prompt = "session \(s): " + String(repeating: "history of session \(s). ", count: 5)
            homes[prompt] = a.select(RoutingRequest(routingText: text(prompt), now: UInt64(s)), from: w, using: &rng)!.index
        }
        b.apply(a.summary(since: 0))
        for (prompt, home) in homes {
            let s = b.select(RoutingRequest(routingText: text(prompt + " next turn"), now: 100), from: w, using: &rng)!
            #expect(s == Selection(home, .cacheHit))
        }
        let since = a.tree.version
        _ = a.select(RoutingRequest(routingText: text("one more prompt after the first summary"), now: 200), from: w, using: &rng)
        #expect(a.summary(since: since).updates.count == 1, "only the new decision travels")
        // Without a consumer no log is kept: a summary is then the whole tree.
        var quiet = policy()
        _ = quiet.select(RoutingRequest(routingText: text("a prompt that is long enough"), now: 1), from: w, using: &rng)
        #expect(quiet.summary(since: 0).isFull)
        #expect(quiet.summary(since: 0).updates.count == 1)
    }
}

@Suite struct PowerOfTwoTests {
    @Test func picksTheLessLoadedOfTwo() {
        var p = PowerOfTwoPolicy()
        var rng = SplitMix64(seed: 2)
        var counts = [0, 0, 0]
        for _ in 0..<3000 { counts[p.select(RoutingRequest(), from: workers([0, 10, 20]), using: &rng)!.index] += 1 }
        // The least loaded wins whenever it is drawn (2/3 of draws); the most loaded never wins.
        #expect(counts[2] == 0)
        #expect(abs(counts[0] - 2000) < 150, "\(counts)")
    }

    @Test func prefersTheWorkersOwnLoadReport() {
        var p = PowerOfTwoPolicy()
        var rng = SplitMix64(seed: 2)
        var w = workers([0, 5])
        w[0].reportedLoad = 50  // the router sends it little, but it is busy
        for _ in 0..<50 { #expect(p.select(RoutingRequest(), from: w, using: &rng)!.index == 1) }
    }

    @Test func singleAndNoneAvailable() {
        var p = PowerOfTwoPolicy()
        var rng = SplitMix64(seed: 2)
        #expect(p.select(RoutingRequest(), from: workers([5, 0], unavailable: [1]), using: &rng)!.index == 0)
        #expect(p.select(RoutingRequest(), from: workers([0], unavailable: [0]), using: &rng) == nil)
    }
}

/// cache_aware's guards on the KV-cache usage workers report (off by default).
@Suite struct CacheAwareTokenUsageTests {
    func policy(spread: Double = 1, ceiling: Double = 1) -> CacheAwarePolicy {
        var c = CacheAwareConfig()
        c.blockSize = 4
        c.balanceTokenUsageThreshold = spread
        c.overloadTokenUsageThreshold = ceiling
        return CacheAwarePolicy(c)
    }
    func workers(_ usage: [Double?], loads: [Int]? = nil) -> [WorkerCandidate] {
        usage.enumerated().map { i, u in WorkerCandidate(id: "w\(i)", url: "http://w\(i)", inFlight: loads?[i] ?? 0, tokenUsage: u) }
    }
    let prompt = Array("You are a helpful assistant. Tell me about routers.".utf8)

    /// Places the prompt on worker 0 (the only one available then); returns the policy.
    func warmed(_ p: CacheAwarePolicy) -> CacheAwarePolicy {
        var p = p, rng = SplitMix64(seed: 1)
        let only = [WorkerCandidate(id: "w0", url: "http://w0"), WorkerCandidate(id: "w1", url: "http://w1", isAvailable: false)]
        #expect(p.select(RoutingRequest(routingText: prompt, now: 1), from: only, using: &rng)?.index == 0)
        return p
    }

    @Test func offByDefaultTheCacheIsFollowedWhateverTheUsage() {
        var p = warmed(policy()), rng = SplitMix64(seed: 2)
        #expect(p.select(RoutingRequest(routingText: prompt, now: 2), from: workers([0.99, 0.0]), using: &rng) == Selection(0, .cacheHit))
    }

    @Test func aWideSpreadGivesTheRequestToTheLeastLoaded() {
        var p = warmed(policy(spread: 0.5)), rng = SplitMix64(seed: 2)
        // Spread 0.4: the cache wins.
        #expect(p.select(RoutingRequest(routingText: prompt, now: 2), from: workers([0.6, 0.2], loads: [3, 5]), using: &rng) == Selection(0, .cacheHit))
        // Spread 0.6: the least loaded wins, wherever the prefix is.
        #expect(p.select(RoutingRequest(routingText: prompt, now: 3), from: workers([0.2, 0.8], loads: [3, 1]), using: &rng) == Selection(1, .imbalance))
        // A worker that reports nothing does not make a spread: the cache is followed (both hold
        // the prompt now; the less loaded of them).
        #expect(p.select(RoutingRequest(routingText: prompt, now: 4), from: workers([0.9, nil], loads: [3, 1]), using: &rng) == Selection(1, .cacheHit))
    }

    @Test func overTheCeilingTheHolderIsPassedOverWhileAnotherIsNot() {
        var p = warmed(policy(ceiling: 0.7)), rng = SplitMix64(seed: 2)
        #expect(p.select(RoutingRequest(routingText: prompt, now: 2), from: workers([0.71, 0.1]), using: &rng)?.index == 1)
        // Every worker over it: the cache is followed as usual.
        var q = warmed(policy(ceiling: 0.7))
        #expect(q.select(RoutingRequest(routingText: prompt, now: 2), from: workers([0.9, 0.8]), using: &rng) == Selection(0, .cacheHit))
    }
}

/// least_load and power_of_two's metrics: the expected wait from what the engines report.
@Suite struct LeastLoadTests {
    func worker(_ i: Int, inFlight: Int = 0, load: Int? = nil, waiting: Int? = nil, throughput: Double? = nil, usage: Double? = nil,
                sent: Int = 0, available: Bool = true) -> WorkerCandidate {
        var c = WorkerCandidate(id: "w\(i)", url: "http://w\(i)", isAvailable: available, inFlight: inFlight, reportedLoad: load, tokenUsage: usage)
        c.reportedWaiting = waiting
        c.throughput = throughput
        c.sentSinceReport = sent
        return c
    }

    @Test func theExpectedWaitIsTheWorkAheadOverTheSpeedPlusKVPressure() {
        let c = LeastLoadConfig()  // 1024 tokens a request, 2000 tokens/s, 0.15 s for a full cache
        #expect(LeastLoadPolicy.expectedWait(worker(0), c) == 0)
        #expect(LeastLoadPolicy.expectedWait(worker(0, inFlight: 4), c) == 4 * 1024 / 2000.0, "no report: the routers' in-flight count")
        #expect(LeastLoadPolicy.expectedWait(worker(0, inFlight: 4, load: 10, waiting: 6, throughput: 4096, sent: 2), c) == 12 * 1024 / 4096.0,
                "the report's running and waiting, the requests sent since, at its own speed")
        #expect(LeastLoadPolicy.expectedWait(worker(0, load: 0, waiting: 0, throughput: 0, usage: 1), c) == 0.15, "a full cache; no speed reported: the default")
    }

    @Test func theShortestExpectedWaitWins() {
        var p = LeastLoadPolicy()
        var rng = SplitMix64(seed: 1)
        // A fast worker with more ahead beats a slow one with less: 8 × 1024 / 8192 = 1 s < 2 × 1024 / 1000 ≈ 2 s.
        let fleet = [worker(0, load: 2, waiting: 0, throughput: 1000), worker(1, load: 8, waiting: 0, throughput: 8192), worker(2, inFlight: 5)]
        #expect(p.select(RoutingRequest(), from: fleet, using: &rng) == Selection(1, .expectedWait))
        // Ties go to the fewer in flight, then the first.
        #expect(p.select(RoutingRequest(), from: [worker(0, inFlight: 1, load: 0), worker(1, load: 0)], using: &rng)?.index == 1)
        #expect(p.select(RoutingRequest(), from: [worker(0, available: false)], using: &rng) == nil)
    }

    @Test func theWaitingCapSkipsLongQueuesWhileAnotherIsShort() {
        var c = LeastLoadConfig()
        c.maxWaitingRequests = 4
        var p = LeastLoadPolicy(c)
        var rng = SplitMix64(seed: 1)
        // Worker 0 is fast enough to win on the expected wait, but its queue (3 + 1 sent since) is at the cap.
        let fleet = [worker(0, load: 4, waiting: 3, throughput: 100_000, sent: 1), worker(1, load: 2, waiting: 1, throughput: 1000)]
        #expect(p.select(RoutingRequest(), from: fleet, using: &rng)?.index == 1)
        let bothLong = [worker(0, load: 4, waiting: 4, throughput: 100_000), worker(1, load: 5, waiting: 5, throughput: 1000)]
        #expect(p.select(RoutingRequest(), from: bothLong, using: &rng)?.index == 0, "every queue at the cap: the expected wait decides")
    }

    @Test func powerOfTwoComparesWhatItsMetricSays() {
        // Worker 0: few requests but slow; worker 1: more requests, fast; the routers send worker 1 less.
        let fleet = [worker(0, inFlight: 3, load: 2, waiting: 0, throughput: 100), worker(1, inFlight: 1, load: 6, waiting: 0, throughput: 100_000)]
        for (metric, winner) in [(PowerOfTwoMetric.expected_wait, 1), (.requests, 0), (.least_requests, 1)] {
            var p = PowerOfTwoPolicy(metric: metric)
            var rng = SplitMix64(seed: 3)
            for _ in 0..<20 { #expect(p.select(RoutingRequest(), from: fleet, using: &rng)?.index == winner, "\(metric)") }
        }
    }
}

/// cache_aware's warm-up: a worker that is new, or whose tree is thin next to the others', is
/// sent some cache hits (one in `divertEvery`, while it has nothing in flight) and misses so it
/// builds a cache instead of idling where every prompt already has a holder.
@Suite struct CacheAwareWarmupTests {
    func policy(blocks: Int = 8, divertEvery: Int = 4, durationMs: UInt64 = 60_000, thinRatio: Double = 0.5) -> CacheAwarePolicy {
        var c = CacheAwareConfig()
        c.blockSize = 4
        c.warmup.blocks = blocks
        c.warmup.divertEvery = divertEvery
        c.warmup.durationMs = durationMs
        c.warmup.thinRatio = thinRatio
        return CacheAwarePolicy(c)
    }
    func fleet(_ n: Int, inFlight: [Int] = []) -> [WorkerCandidate] {
        (0..<n).map { WorkerCandidate(id: "w\($0)", url: "http://w\($0)", inFlight: $0 < inFlight.count ? inFlight[$0] : 0) }
    }
    let prompt = Array("You are a helpful assistant. Tell me about routers.".utf8)

    /// Worker 0 serves alone until its warm-up is over (it grew past `blocks`); then worker 1 joins.
    func withVeteran(_ p: inout CacheAwarePolicy, rng: inout SplitMix64) {
        let alone = [WorkerCandidate(id: "w0", url: "http://w0"), WorkerCandidate(id: "w1", url: "http://w1", isAvailable: false)]
        for t in 0..<4 { _ = p.select(RoutingRequest(routingText: Array("warm-up prompt \(t) of some length".utf8), now: UInt64(t) * 2000), from: alone, using: &rng) }
        _ = p.select(RoutingRequest(routingText: prompt, now: 10_000), from: alone, using: &rng)
    }

    @Test func aNewWorkerGetsOneHitInDivertEveryUntilItHasGrown() {
        var p = policy(blocks: 30, divertEvery: 4), rng = SplitMix64(seed: 1)
        withVeteran(&p, rng: &rng)
        var served: [Int] = []
        for t in 0..<16 {
            let s = p.select(RoutingRequest(routingText: prompt + Array(" turn \(t)".utf8), now: 12_000 + UInt64(t)), from: fleet(2), using: &rng)!
            served.append(s.index)
            if s.index == 1 { #expect(s.reason == .warmup) }
        }
        #expect(served.filter { $0 == 1 }.count >= 2, "the newcomer got diverted hits: \(served)")
        #expect(served.first == 0, "hits stay with the holder between diverts: \(served)")
    }

    @Test func aBusyWarmingWorkerIsNotSentMore() {
        var p = policy(divertEvery: 1), rng = SplitMix64(seed: 1)
        withVeteran(&p, rng: &rng)
        for t in 0..<8 {
            let s = p.select(RoutingRequest(routingText: prompt, now: 12_000 + UInt64(t)), from: fleet(2, inFlight: [0, 1]), using: &rng)!
            #expect(s == Selection(0, .cacheHit), "one in flight per warming worker")
        }
    }

    @Test func offWhenTheDurationIsZero() {
        var p = policy(divertEvery: 1, durationMs: 0), rng = SplitMix64(seed: 1)
        withVeteran(&p, rng: &rng)
        for t in 0..<8 {
            #expect(p.select(RoutingRequest(routingText: prompt, now: 12_000 + UInt64(t)), from: fleet(2), using: &rng) == Selection(0, .cacheHit))
        }
    }

    @Test func aWorkerWhoseTreeWasEmptiedWarmsAgain() {
        var p = policy(blocks: 1000, divertEvery: 1, durationMs: 1000), rng = SplitMix64(seed: 1)
        // Both serve for long enough that their age warm-ups are over, worker 1 holding little.
        for t in 0..<40 {
            let w = t % 4 == 0 ? 1 : 0
            let only = fleet(2).enumerated().map { i, c in var c = c; c.isAvailable = i == w; return c }
            _ = p.select(RoutingRequest(routingText: Array("distinct prompt number \(t) for the tree".utf8), now: 5_000 + UInt64(t) * 100), from: only, using: &rng)
        }
        _ = p.select(RoutingRequest(routingText: prompt, now: 9_000), from: [fleet(2)[0], WorkerCandidate(id: "w1", url: "http://w1", isAvailable: false)], using: &rng)
        p.removeWorker(id: "w1")  // a restart: its tree is gone
        let s = p.select(RoutingRequest(routingText: prompt, now: 20_000), from: fleet(2), using: &rng)
        #expect(s == Selection(1, .warmup), "an empty worker next to a full one warms: \(String(describing: s))")
    }
}
