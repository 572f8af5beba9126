import Foundation
import TestSupport
import Testing

/// `--dp-aware`: a worker serving several data-parallel ranks is as many candidates; the chosen
/// rank travels as `data_parallel_rank`, which the simulated worker checks against its
/// `--dp-size` and reports back in `x-sim-dp-rank`.
@Suite(.serialized) struct DPAwareTests {
    static func router(_ workers: [SimWorkerProcess], _ extra: [String]) async throws -> RouterProcess {
        let r = try await RouterProcess(["--dp-aware", "--worker-urls"] + workers.map(\.url) + extra)
        try await eventually(timeout: .seconds(15), "the router learned every worker's ranks") {
            let listed = try r.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
            return listed.count == workers.count && listed.allSatisfy { ($0["dp_size"] as? Int ?? 1) > 1 || $0["model_id"] is String }
                && listed.reduce(0) { $0 + ($1["dp_size"] as? Int ?? 0) } == workers.reduce(0) { $0 + $1.dpSize }
        }
        return r
    }

    @Test func requestsSpreadOverEveryRankAndEachCarriesItsRank() async throws {
        let w = try await SimWorkerProcess(name: "dp", ["--dp-size", "4"])
        let r = try await Self.router([w], ["--policy", "round_robin"])
        var ranks: [String] = []
        for i in 0..<8 {
            let answer = try r.request("POST", "/generate", body: #"{"text":"request \#(i)"}"#)
            #expect(answer.status == 200, "\(answer.text)")
            ranks.append(answer.header("x-sim-dp-rank") ?? "none")
        }
        #expect(ranks.sorted() == ["0", "0", "1", "1", "2", "2", "3", "3"], "round robin over the 4 ranks: \(ranks)")
        // Also an empty body and a chat completion get a rank; a client may not pick one itself.
        #expect(try r.chat("hi").header("x-sim-dp-rank") != nil)
        #expect(try r.request("POST", "/generate", body: "{}").header("x-sim-dp-rank") != nil)
        let owned = try r.request("POST", "/generate", body: #"{"text":"x","data_parallel_rank":1}"#)
        #expect(owned.status == 400 && owned.errorCode == "router_owned_field")
        // A rank the worker does not have is refused by the worker (what the checks above rely on).
        let direct = try HTTPClient.request(port: w.port, method: "POST", path: "/generate", body: Array(#"{"text":"x","data_parallel_rank":4}"#.utf8))
        #expect(direct.status == 400)
    }

    /// A worker that reported `dp_size` 2^62 used to leave --dp-aware requests hanging and the
    /// router at gigabytes, deaf to SIGTERM. Above 1,024 ranks the worker is refused (not routed
    /// to, the reason in GET /workers and the log); the others serve; the router stays small.
    @Test func aWorkerReportingAnImpossibleDPSizeIsRefusedAndTheOthersServe() async throws {
        let bad = try await SimWorkerProcess(name: "bad", ["--dp-size", "4611686018427387904"])
        let good = try await SimWorkerProcess(name: "good", ["--dp-size", "2"])
        let r = try await RouterProcess(["--dp-aware", "--policy", "round_robin", "--worker-urls", bad.url, good.url,
                                         "--health-check-interval-secs", "1"], waitForWorkers: false)
        func listed(_ url: String) throws -> [String: Any] {
            (try r.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []).first { $0["url"] as? String == url } ?? [:]
        }
        try await eventually(timeout: .seconds(15), "the bad worker is refused and the good one has its ranks") {
            let b = try listed(bad.url), g = try listed(good.url)
            return (b["refused"] as? String)?.contains("dp_size") == true && b["is_healthy"] as? Bool == false
                && g["dp_size"] as? Int == 2 && g["is_healthy"] as? Bool == true
        }
        for i in 0..<6 {
            let answer = try r.request("POST", "/generate", body: #"{"text":"request \#(i)"}"#)
            #expect(answer.status == 200 && answer.header("x-sim-worker") == "good", "\(answer.status) \(answer.text)")
        }
        // Health checks pass on the bad worker (more than the success threshold), and it stays refused.
        let checked = try bad.stats()["health_checks"] ?? 0
        try await eventually(timeout: .seconds(10), "three more health checks of the bad worker") { try (bad.stats()["health_checks"] ?? 0) >= checked + 3 }
        #expect((try listed(bad.url)["is_healthy"]) as? Bool == false)
        #expect(r.process.stdout.contains("impossible number of data-parallel ranks") || r.process.stderr.contains("impossible number of data-parallel ranks"))
        let rss = try String(contentsOfFile: "/proc/\(r.process.process.processIdentifier)/status", encoding: .utf8)
            .split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) } ?? .max
        #expect(rss < 300_000, "router RSS \(rss) kB")
        r.process.signal(SIGTERM)
        #expect(await r.process.waitForExit(timeout: .seconds(10)) != nil, "the router exits on SIGTERM")
    }

    @Test func inPDModeEachHalfGetsItsRankAndTheDecodeHalfThePrefillsRank() async throws {
        // A prefill of 2 ranks and a decode worker of 4: `routed_dp_rank` to each, and to the
        // decode worker `disagg_prefill_dp_rank`, which the simulated KV handshake checks against
        // the rank that computed the room.
        let p = try await SimWorkerProcess(name: "p0", ["--role", "prefill", "--bootstrap-port", "0", "--dp-size", "2"])
        let d = try await SimWorkerProcess(name: "d0", ["--role", "decode", "--dp-size", "4"])
        let r = try await RouterProcess(["--dp-aware", "--policy", "round_robin", "--pd-disaggregation",
                                         "--prefill", p.url, String(p.bootstrapPort!), "--decode", d.url])
        try await eventually(timeout: .seconds(15), "the router learned both workers' ranks") {
            let listed = try r.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
            return Set(listed.compactMap { $0["dp_size"] as? Int }) == [2, 4] && listed.allSatisfy { $0["is_healthy"] as? Bool == true }
        }
        var decodeRanks: [String] = [], prefillRanks: [String] = []
        for i in 0..<8 {
            let answer = try r.request("POST", "/generate", body: #"{"text":"request \#(i)"}"#)
            #expect(answer.status == 200, "\(answer.text)")
            decodeRanks.append(answer.header("x-sim-dp-rank") ?? "none")
            prefillRanks.append(answer.header("x-sim-prefill-dp-rank") ?? "none")
        }
        #expect(decodeRanks.sorted() == ["0", "0", "1", "1", "2", "2", "3", "3"], "\(decodeRanks)")
        #expect(prefillRanks.sorted() == ["0", "0", "0", "0", "1", "1", "1", "1"], "\(prefillRanks)")
        let owned = try r.request("POST", "/generate", body: #"{"text":"x","routed_dp_rank":1}"#)
        #expect(owned.status == 400 && owned.errorCode == "router_owned_field")
    }

    @Test func cacheAwareKeepsATreePerRank() async throws {
        let w = try await SimWorkerProcess(name: "dp", ["--dp-size", "4"])
        let r = try await Self.router([w], ["--policy", "cache_aware"])
        var homes: [String] = []
        for c in 0..<8 {
            var history = "conversation \(c): " + String(repeating: "the context of conversation \(c). ", count: 12)
            var ranks = Set<String>()
            for turn in 0..<4 {
                history += " turn \(turn)"
                ranks.insert(try r.chat(history).header("x-sim-dp-rank") ?? "none")
            }
            #expect(ranks.count == 1, "conversation \(c) stayed on one rank: \(ranks)")
            homes.append(ranks.first ?? "none")
        }
        #expect(Set(homes).count >= 3, "conversations spread over the ranks: \(homes)")
    }
}
