import Foundation
import TestSupport
import Testing

/// The point of cache-aware routing, measured end to end: a multi-turn workload with long
/// shared system prompts and growing histories, through the real router, with the simulated
/// workers reporting how many prompt tokens they found cached.
@Suite(.serialized) struct CacheAwareRoutingTests {
    /// Dozens of interleaved sessions; each turn resends the whole conversation so far.
    struct Workload {
        let sessions = 31  // prime to the worker count, so round_robin really scatters turns
        let turns = 6
        let systemPrompts = (0..<3).map { p in
            "System \(p): you are assistant number \(p). " + String(repeating: "Follow policy \(p) carefully and answer briefly. ", count: 15)
        }

        func userTurn(_ s: Int, _ t: Int) -> String {
            "User \(s) turn \(t): " + String(repeating: "tell me more about topic \(s * 7 + t). ", count: 8)
        }
    }

    /// Runs the workload through a router and returns (cached tokens, prompt tokens).
    func run(policy: String, workers: Int) async throws -> (cached: Int, prompt: Int) {
        var sims: [InProcessWorker] = []
        for i in 0..<workers { sims.append(try await InProcessWorker(name: "w\(i)", ["--output-tokens", "12", "--cache-capacity-blocks", "200000"])) }
        let smg = try await InProcessRouter(["--worker-urls"] + sims.map(\.url) + ["--policy", policy])
        try await waitForModels(smg, count: workers)
        return try Self.drive(Workload(), routers: [smg])
    }

    /// Sends the workload, turn by turn, request `i` to router `i % routers.count`.
    static func drive(_ w: Workload, routers: [any RouterUnderTest]) throws -> (cached: Int, prompt: Int) {
        var histories = (0..<w.sessions).map { s in [["role": "system", "content": w.systemPrompts[s % w.systemPrompts.count]]] }
        var cached = 0, prompt = 0
        for t in 0..<w.turns {
            for s in 0..<w.sessions {
                histories[s].append(["role": "user", "content": w.userTurn(s, t)])
                let body = try JSONSerialization.data(withJSONObject: ["model": "sim-model", "messages": histories[s]])
                let router = routers[(t * w.sessions + s) % routers.count]
                let r = try HTTPClient.request(port: router.port, method: "POST", path: "/v1/chat/completions", body: Array(body))
                #expect(r.status == 200)
                let json = try r.json()
                let usage = json["usage"] as? [String: Any] ?? [:]
                prompt += usage["prompt_tokens"] as? Int ?? 0
                cached += (usage["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int ?? 0
                let reply = (((json["choices"] as? [[String: Any]])?.first?["message"]) as? [String: Any])?["content"] as? String ?? ""
                histories[s].append(["role": "assistant", "content": reply])
            }
        }
        return (cached, prompt)
    }

    @Test func cacheAwareKeepsConversationsOnTheWorkerThatHoldsThem() async throws {
        let best = try await run(policy: "round_robin", workers: 1)
        let cacheAware = try await run(policy: "cache_aware", workers: 4)
        let roundRobin = try await run(policy: "round_robin", workers: 4)
        #expect(best.prompt == cacheAware.prompt && best.prompt == roundRobin.prompt, "the same workload each time")
        let ratio = { (r: (cached: Int, prompt: Int)) in Double(r.cached) / Double(r.prompt) }
        let message = "hit ratios: single worker \(ratio(best)), cache_aware \(ratio(cacheAware)), round_robin \(ratio(roundRobin))"
        #expect(ratio(cacheAware) >= ratio(best) - 0.03, "\(message)")
        #expect(ratio(cacheAware) >= ratio(roundRobin) + 0.20, "\(message)")
        print(message)
    }

    @Test func routingKeysKeepSessionsStickyEndToEnd() async throws {
        let a = try await InProcessWorker(name: "a")
        let b = try await InProcessWorker(name: "b")
        let c = try await InProcessWorker(name: "c")
        for policy in ["consistent_hashing", "manual"] {
            let smg = try await InProcessRouter(["--worker-urls", a.url, b.url, c.url, "--policy", policy])
            try await waitForModels(smg, count: 3)
            var homes = Set<String>()
            for s in 0..<12 {
                let served = try (0..<4).map { _ in try smg.chat("hi", headers: [("X-SMG-Routing-Key", "session-\(s)")]).header("x-sim-worker") ?? "" }
                #expect(Set(served).count == 1, "\(policy): session-\(s) went to \(served)")
                homes.insert(served[0])
            }
            #expect(homes.count > 1, "\(policy): sessions spread over workers")
            #expect(try smg.metric(#"smg_policy_decisions_total{policy="\#(policy)",model="unknown",reason="\#(policy == "manual" ? "sticky" : "hash_ring")"}"#) > 0)
        }
        // X-SMG-Target-Worker pins by index under consistent_hashing.
        let smg = try await InProcessRouter(["--worker-urls", a.url, b.url, c.url, "--policy", "consistent_hashing"])
        #expect(try (0..<3).map { _ in try smg.chat("x", headers: [("X-SMG-Target-Worker", "1")]).header("x-sim-worker") } == ["b", "b", "b"])
    }

    @Test func powerOfTwoAvoidsAWorkerThatReportsItselfBusy() async throws {
        let busy = try await InProcessWorker(name: "busy", ["--extra-reported-load", "100"])
        let idle = try await InProcessWorker(name: "idle")
        let smg = try await InProcessRouter(["--worker-urls", busy.url, idle.url, "--policy", "power_of_two"])
        try await waitForModels(smg, count: 2)
        try await eventually(timeout: .seconds(15), "the busy worker's load report reaches the router") {
            let workers = try smg.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
            return workers.contains { $0["url"] as? String == busy.url && $0["reported_load"] as? Int == 100 }
        }
        // The router itself sends both the same (nothing at a time), so only the reports can
        // tell them apart: without them half of these would go to the busy worker.
        let served = try (0..<20).map { _ in try smg.chat("x").header("x-sim-worker") ?? "" }
        #expect(served.allSatisfy { $0 == "idle" }, "\(served)")
    }

    /// least_load by what the engines report: a worker with a short queue (under overload
    /// protection's 8) gets nothing while another has none; once both report the same, the
    /// requests the router sent since the last report spread a burst over both.
    @Test func leastLoadFollowsTheEnginesQueues() async throws {
        let calm = try await InProcessWorker(name: "calm")
        let queued = try await InProcessWorker(name: "queued", ["--reported-waiting", "5"])
        let smg = try await InProcessRouter(["--worker-urls", calm.url, queued.url, "--policy", "least_load", "--load-monitor-interval", "60"])
        try await waitForModels(smg, count: 2)
        try await eventually(timeout: .seconds(10), "the queue is reported") {
            let workers = try smg.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
            return workers.contains { $0["url"] as? String == queued.url && $0["reported_load"] as? Int == 5 }
        }
        // Sequential requests: nothing is in flight between them, but each counts as sent since
        // the report, so after five the calm worker's wait equals the queued one's.
        let served = try (0..<10).map { _ in try smg.chat("x").header("x-sim-worker") ?? "" }
        #expect(served.prefix(5).allSatisfy { $0 == "calm" }, "\(served)")
        #expect(served.contains("queued"), "the requests sent since the report count: \(served)")
        #expect(try smg.metric(#"smg_policy_decisions_total{policy="least_load",model="unknown",reason="expected_wait"}"#) == 10)
    }

    /// A worker added to a fleet where every prompt already has a holder gets a share of the hits
    /// while it warms (one in --worker-warmup-divert-every), so it builds a cache instead of idling.
    @Test func aNewWorkerGetsItsWarmupShare() async throws {
        let a = try await InProcessWorker(name: "a")
        let b = try await InProcessWorker(name: "b")
        let smg = try await InProcessRouter(["--worker-urls", a.url, "--worker-warmup-blocks", "2", "--worker-warmup-divert-every", "4"])
        try await waitForModels(smg, count: 1)
        let prefix = "a system prompt every request of this workload shares, long enough for the tree"
        for i in 0..<4 { #expect(try smg.chat("\(prefix) \(i)").header("x-sim-worker") == "a") }
        #expect(try smg.request("POST", "/workers", body: #"{"url": "\#(b.url)", "model_id": "sim-model"}"#).status < 300)
        try await waitForModels(smg, count: 2)
        let served = try (0..<16).map { i in try smg.chat("\(prefix) later \(i)").header("x-sim-worker") ?? "" }
        #expect(served.contains("b"), "the newcomer got diverted hits: \(served)")
        #expect(try smg.metric(#"smg_cache_aware_policy_branch_total{branch="warmup"}"#) >= 1)
        // Without warm-up every one of them follows the cache to a.
        let c = try await InProcessWorker(name: "c")
        let d = try await InProcessWorker(name: "d")
        let plain = try await InProcessRouter(["--worker-urls", c.url, "--worker-warmup-secs", "0"])
        try await waitForModels(plain, count: 1)
        for i in 0..<4 { _ = try plain.chat("\(prefix) \(i)") }
        #expect(try plain.request("POST", "/workers", body: #"{"url": "\#(d.url)", "model_id": "sim-model"}"#).status < 300)
        try await waitForModels(plain, count: 2)
        #expect(try (0..<16).map { i in try plain.chat("\(prefix) later \(i)").header("x-sim-worker") ?? "" }.allSatisfy { $0 == "c" })
    }

    @Test func everyPolicyServesRequests() async throws {
        let a = try await InProcessWorker(name: "a")
        let b = try await InProcessWorker(name: "b")
        for policy in ["random", "round_robin", "power_of_two", "least_load", "cache_aware", "prefix_hash", "consistent_hashing", "manual"] {
            let smg = try await InProcessRouter(["--worker-urls", a.url, b.url, "--policy", policy])
            for _ in 0..<4 { #expect(try smg.chat("hello \(policy)").status == 200, "\(policy)") }
            #expect(try smg.request("POST", "/generate", body: #"{"input_ids":[1,2,3,4,5,6,7,8]}"#).status == 200)
            #expect(try smg.request("POST", "/v1/embeddings", body: #"{"input":["x","y"]}"#).status == 200)
        }
    }

    @Test func cacheAwareMetricsAndWorkerRemoval() async throws {
        let a = try await InProcessWorker(name: "a")
        let b = try await InProcessWorker(name: "b")
        let smg = try await InProcessRouter(["--worker-urls", a.url, b.url])  // cache_aware is the default
        try await waitForModels(smg, count: 2)
        let prompt = String(repeating: "a shared system prompt. ", count: 20)
        let first = try smg.chat(prompt, model: "sim-model").header("x-sim-worker")
        for i in 0..<5 { #expect(try smg.chat(prompt + "question \(i)", model: "sim-model").header("x-sim-worker") == first) }
        #expect(try smg.metric(#"smg_policy_decisions_total{policy="cache_aware",model="sim-model",reason="cache_hit"}"#) == 5)
        #expect(try smg.metric(#"smg_policy_state_size{model="sim-model",policy="cache_aware"}"#) > 0)
        // Removing the worker that holds the prefix evicts it: the next turn is a miss elsewhere.
        let url = first == "a" ? a.url : b.url
        #expect(try smg.request("POST", "/remove_worker?url=\(url)").status == 200)
        #expect(try smg.chat(prompt + "after removal", model: "sim-model").header("x-sim-worker") != first)
        #expect(try smg.metric(#"smg_policy_decisions_total{policy="cache_aware",model="sim-model",reason="cache_miss"}"#) == 2)
    }
}
