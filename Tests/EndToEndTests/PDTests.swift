import Foundation
import TestSupport
import Testing

/// Prefill/decode disaggregation through a real router and real simulated workers that play
/// both roles: a decode worker answers only after the prefill named in its bootstrap fields has
/// seen the same room over its bootstrap server (`SimBootstrap`), so a router that pairs wrongly,
/// forgets a field or sends different rooms to the two halves fails these tests.
@Suite(.serialized) struct PDTests {
    struct Fleet {
        var prefills: [SimWorkerProcess] = []
        var decodes: [SimWorkerProcess] = []
        var flags: [String] {
            ["--pd-disaggregation"] + prefills.flatMap { ["--prefill", $0.url, String($0.bootstrapPort!)] } + decodes.flatMap { ["--decode", $0.url] }
        }
    }

    static func fleet(prefills: Int, decodes: Int) async throws -> Fleet {
        var f = Fleet()
        for i in 0..<prefills { f.prefills.append(try await SimWorkerProcess(name: "p\(i)", ["--role", "prefill", "--bootstrap-port", "0"])) }
        for i in 0..<decodes { f.decodes.append(try await SimWorkerProcess(name: "d\(i)", ["--role", "decode"])) }
        return f
    }

    static func router(_ fleet: Fleet, _ extra: [String] = []) async throws -> RouterProcess {
        let r = try await RouterProcess(fleet.flags + extra)
        try await eventually(timeout: .seconds(15), "every PD worker is healthy") {
            let listed = try r.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
            return listed.count == fleet.prefills.count + fleet.decodes.count && listed.allSatisfy { $0["is_healthy"] as? Bool == true }
        }
        return r
    }

    @Test func everyPDRouteSucceedsAndTheDecodeWorkerFindsThePrefillsRoom() async throws {
        let fleet = try await Self.fleet(prefills: 2, decodes: 2)
        let r = try await Self.router(fleet, ["--policy", "round_robin"])
        let bodies: [(String, String)] = [
            ("/generate", #"{"text":"hello","sampling_params":{"max_new_tokens":4}}"#),
            ("/v1/chat/completions", #"{"model":"sim-model","messages":[{"role":"user","content":"hello"}]}"#),
            ("/v1/completions", #"{"model":"sim-model","prompt":"hello","max_tokens":4}"#),
            ("/v1/rerank", #"{"query":"q","documents":["a","b"]}"#),
        ]
        var prefillsSeen = Set<String>(), decodesSeen = Set<String>()
        for _ in 0..<2 {
            for (path, body) in bodies {
                let answer = try r.request("POST", path, body: body)
                #expect(answer.status == 200, "\(path): \(answer.status) \(answer.text)")
                let prefill = try #require(answer.header("x-sim-prefill"), "\(path): the decode worker reached a prefill")
                prefillsSeen.insert(prefill)
                decodesSeen.insert(answer.header("x-sim-worker") ?? "?")
                #expect(answer.header("x-sim-bootstrap-room").flatMap { UInt64($0) }.map { $0 <= UInt64(Int64.max) } == true)
            }
        }
        #expect(prefillsSeen == ["p0", "p1"] && decodesSeen == ["d0", "d1"], "round robin on each side: \(prefillsSeen) \(decodesSeen)")
        // Each prefill got its half of every request it was paired for.
        let prefilled = try fleet.prefills.map { try $0.stats()["requests"] ?? 0 }.reduce(0, +)
        #expect(prefilled == 2 * bodies.count)
        // Streaming relays the decode worker's events.
        let stream = try r.request("POST", "/v1/chat/completions", body: #"{"model":"sim-model","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#)
        #expect(stream.status == 200 && stream.header("x-sim-prefill") != nil)
        #expect(stream.text.components(separatedBy: "data: ").count - 1 == 5 + 2, "5 tokens, the final event and [DONE]: \(stream.text)")
        // Info routes answer from the first prefill worker.
        for _ in 0..<3 {
            let info = try r.request("GET", "/get_server_info")
            #expect(info.status == 200 && info.header("x-sim-worker") == "p0", "\(info.text)")
        }
        // Other inference routes are not served in PD mode; a client may not set the bootstrap fields.
        #expect(try r.request("POST", "/v1/embeddings", body: #"{"input":"x"}"#).errorCode == "not_supported_in_pd_mode")
        let owned = try r.request("POST", "/generate", body: #"{"text":"x","bootstrap_room":7}"#)
        #expect(owned.status == 400 && owned.errorCode == "router_owned_field")
        // Without the router's fields a decode worker refuses (what the checks above rely on).
        let direct = try HTTPClient.request(port: fleet.decodes[0].port, method: "POST", path: "/generate", body: Array(#"{"text":"x"}"#.utf8))
        #expect(direct.status == 400)
        // The workers API shows the two kinds.
        let workers = try #require(try r.request("GET", "/workers").json()["workers"] as? [[String: Any]])
        #expect(workers.filter { $0["worker_type"] as? String == "prefill" }.compactMap { $0["bootstrap_port"] as? Int }.sorted()
                == fleet.prefills.compactMap(\.bootstrapPort).sorted())
        #expect(workers.filter { $0["worker_type"] as? String == "decode" }.count == 2)
        let byType = try #require((try r.request("GET", "/workers").json()["stats"] as? [String: Any])?["by_type"] as? [String: Int])
        #expect(byType == ["prefill": 2, "decode": 2, "regular": 0])
        #expect(try r.metric(#"smg_workers_by_type{type="prefill",state="available"}"#) == 2)
        #expect(try r.metric("smg_pd_prefill_duration_seconds_count") >= Double(2 * bodies.count))
    }

    @Test func aBatchGetsARoomPerElement() async throws {
        let fleet = try await Self.fleet(prefills: 1, decodes: 1)
        let r = try await Self.router(fleet)
        for (path, body, n) in [("/v1/chat/completions", #"{"model":"sim-model","n":2,"messages":[{"role":"user","content":"hi"}]}"#, 2),
                                ("/generate", #"{"text":["a","b","c"]}"#, 3),
                                ("/v1/completions", #"{"prompt":["a","b"]}"#, 2),
                                ("/v1/completions", #"{"prompt":[1,2,3]}"#, 1)] {
            let answer = try r.request("POST", path, body: body)
            #expect(answer.status == 200, "\(path) \(body): \(answer.text)")
            let rooms = (answer.header("x-sim-bootstrap-room") ?? "").split(separator: ",")
            #expect(rooms.count == n && Set(rooms).count == n, "\(body): rooms \(rooms)")
        }
    }

    /// One request used to abort a PD router: `n` = 10^18 made it allocate a room per choice.
    /// Every count a body can ask for is bounded (`--max-batch-size`, 128) and refused with 400
    /// before any worker is asked; a batch at the bound is served, a room per element.
    @Test func aBatchOverTheBoundIsRefusedBeforeAnyWorkerSeesIt() async throws {
        let fleet = try await Self.fleet(prefills: 1, decodes: 1)
        let r = try await Self.router(fleet)
        let texts = { (n: Int) in "[" + (0..<n).map { "\"t\($0)\"" }.joined(separator: ",") + "]" }
        let refused: [(String, String)] = [
            ("/v1/chat/completions", #"{"model":"sim-model","n":1000000000000000000,"messages":[{"role":"user","content":"hi"}]}"#),
            ("/v1/chat/completions", #"{"model":"sim-model","n":100000000,"messages":[{"role":"user","content":"hi"}]}"#),
            ("/v1/chat/completions", #"{"model":"sim-model","n":1e300,"messages":[{"role":"user","content":"hi"}]}"#),
            ("/v1/completions", #"{"prompt":"a","best_of":129}"#),
            ("/generate", #"{"text":"a","sampling_params":{"n":4611686018427387904}}"#),
            ("/generate", #"{"text":\#(texts(129))}"#),
            ("/generate", #"{"input_ids":[\#((0..<129).map { _ in "[1,2]" }.joined(separator: ","))]}"#),
            ("/v1/completions", #"{"prompt":\#(texts(100_000))}"#),
        ]
        for (path, body) in refused {
            let answer = try r.request("POST", path, body: body)
            #expect(answer.status == 400 && answer.errorCode == "batch_too_large", "\(path) \(body.prefix(80)): \(answer.status) \(answer.text)")
        }
        #expect(try fleet.prefills[0].stats()["requests"] ?? 0 == 0, "no refused batch reached a worker")
        let atTheBound = try r.request("POST", "/generate", body: #"{"text":\#(texts(128))}"#)
        #expect(atTheBound.status == 200, "\(atTheBound.text.prefix(200))")
        #expect(Set((atTheBound.header("x-sim-bootstrap-room") ?? "").split(separator: ",")).count == 128)
        // One prompt's token ids are one request, however many.
        let tokens = try r.request("POST", "/generate", body: #"{"input_ids":[\#((0..<5000).map(String.init).joined(separator: ","))]}"#)
        #expect(tokens.status == 200, "\(tokens.text.prefix(200))")
        #expect(try r.request("GET", "/health").status == 200, "the router is still up")
    }

    @Test func thePrefillsPromptLogprobsArePrependedExactly() async throws {
        let fleet = try await Self.fleet(prefills: 1, decodes: 1)
        let r = try await Self.router(fleet)
        let prompt = "hello, logprobs"
        // What the prefill computes for the prompt (the simulator's fixed values); the decode worker has none.
        let expected: [[Double]] = prompt.utf8.map { [-Double($0 % 10 + 1) / 10, Double($0)] }
        func lists(_ meta: [String: Any]?) -> [[Double]] {
            ((meta?["input_token_logprobs"] as? [[Any]]) ?? []).map { $0.prefix(2).compactMap { ($0 as? NSNumber)?.doubleValue } }
        }
        let whole = try r.request("POST", "/generate", body: #"{"text":"\#(prompt)","return_logprob":true,"sampling_params":{"max_new_tokens":3}}"#)
        #expect(whole.status == 200, "\(whole.text)")
        let meta = try whole.json()["meta_info"] as? [String: Any]
        #expect(lists(meta) == expected, "\(whole.text)")
        #expect((meta?["output_token_logprobs"] as? [Any])?.count == 3)
        #expect(whole.header("content-length") == String(whole.body.count))
        // Streamed: every event carries the cumulative meta_info, each with the prompt's logprobs.
        let stream = try r.request("POST", "/generate", body: #"{"text":"\#(prompt)","stream":true,"return_logprob":true,"sampling_params":{"max_new_tokens":3}}"#)
        let events = stream.text.components(separatedBy: "\n\n").filter { $0.hasPrefix("data: {") }
        #expect(events.count == 3, "\(stream.text)")
        for e in events {
            let object = try JSONSerialization.jsonObject(with: Data(e.dropFirst(6).utf8)) as? [String: Any]
            #expect(lists(object?["meta_info"] as? [String: Any]) == expected, "\(e)")
        }
        #expect(stream.text.hasSuffix("data: [DONE]\n\n"))
        // Without return_logprob nothing is merged: the decode worker's answer as it is.
        let plain = try r.request("POST", "/generate", body: #"{"text":"\#(prompt)"}"#)
        #expect((try plain.json()["meta_info"] as? [String: Any])?["input_token_logprobs"] == nil)
    }

    @Test func aKilledPrefillWorkerCostsNoRequest() async throws {
        let fleet = try await Self.fleet(prefills: 2, decodes: 2)
        let r = try await Self.router(fleet, ["--policy", "round_robin"])
        var failures: [String] = []
        var prefills: [String] = []
        for i in 0..<30 {
            if i == 8 { fleet.prefills[0].process.signal(SIGKILL) }
            let answer = try r.request("POST", "/generate", body: #"{"text":"request \#(i)"}"#)
            if answer.status != 200 { failures.append("\(i): \(answer.status) \(answer.text)") }
            prefills.append(answer.header("x-sim-prefill") ?? "-")
        }
        #expect(failures.isEmpty, "\(failures)")
        #expect(prefills.suffix(20).allSatisfy { $0 == "p1" }, "after the kill every pair has p1: \(prefills)")
        #expect(try r.metric("smg_worker_retries_total{worker_type=\"decode\",endpoint=\"generate\"}") >= 1)
    }

    @Test func aCacheAwarePrefillPolicyKeepsAConversationOnOnePrefill() async throws {
        let fleet = try await Self.fleet(prefills: 2, decodes: 2)
        let r = try await Self.router(fleet, ["--prefill-policy", "cache_aware", "--decode-policy", "round_robin"])
        for c in 0..<4 {
            var history = "conversation \(c): " + String(repeating: "a long shared context for conversation \(c). ", count: 10)
            var prefills = Set<String>(), decodes = Set<String>()
            for turn in 0..<5 {
                history += " turn \(turn)"
                let answer = try r.chat(history)
                #expect(answer.status == 200)
                prefills.insert(answer.header("x-sim-prefill") ?? "?")
                decodes.insert(answer.header("x-sim-worker") ?? "?")
            }
            #expect(prefills.count == 1, "conversation \(c) stayed on one prefill: \(prefills)")
            #expect(decodes.count == 2, "the decode side went round robin: \(decodes)")
        }
    }

    @Test func consistentHashingWithARoutingKeyKeepsAKeyOnOnePair() async throws {
        // slime's use: --policy consistent_hashing and X-SMG-Routing-Key per rollout group.
        let fleet = try await Self.fleet(prefills: 2, decodes: 2)
        let r = try await Self.router(fleet, ["--policy", "consistent_hashing"])
        var pairs: [String: Set<String>] = [:]
        for round in 0..<3 {
            for key in 0..<8 {
                let answer = try r.request("POST", "/generate", body: #"{"text":"sample \#(round)"}"#, headers: [("X-SMG-Routing-Key", "group-\(key)")])
                #expect(answer.status == 200)
                pairs["group-\(key)", default: []].insert("\(answer.header("x-sim-prefill") ?? "?")+\(answer.header("x-sim-worker") ?? "?")")
            }
        }
        #expect(pairs.values.allSatisfy { $0.count == 1 }, "each key kept its pair: \(pairs)")
        #expect(Set(pairs.values.flatMap { $0 }).count > 1, "keys spread over pairs: \(pairs)")
    }

    @Test func meshedPDRoutersShareTheirPrefillAndDecodeWorkers() async throws {
        let fleet = try await Self.fleet(prefills: 1, decodes: 1)
        let ports = try (0..<2).map { _ in try freeLoopbackPort() }
        var routers: [RouterProcess] = []
        for i in 0..<2 {
            routers.append(try await RouterProcess(["--pd-disaggregation", "--enable-mesh", "--mesh-server-name", "r\(i)", "--mesh-host", "127.0.0.1",
                                                    "--mesh-port", String(ports[i]), "--mesh-peer-urls", "127.0.0.1:\(ports[1 - i])"]))
        }
        let p = fleet.prefills[0]
        #expect(try routers[0].request("POST", "/workers", body: #"{"url":"\#(p.url)","worker_type":"prefill","bootstrap_port":\#(p.bootstrapPort!)}"#).status == 202)
        #expect(try routers[0].request("POST", "/workers", body: #"{"url":"\#(fleet.decodes[0].url)","worker_type":"decode"}"#).status == 202)
        // The other router learns both, with their roles and the bootstrap port, and pairs them.
        try await eventually(timeout: .seconds(10), "r1 serves PD requests with r0's workers") {
            try routers[1].request("POST", "/generate", body: #"{"text":"x"}"#).header("x-sim-prefill") == "p0"
        }
        let workers = try #require(try routers[1].request("GET", "/workers").json()["workers"] as? [[String: Any]])
        #expect(Set(workers.compactMap { $0["worker_type"] as? String }) == ["prefill", "decode"])
        #expect(workers.compactMap { $0["bootstrap_port"] as? Int } == [p.bootstrapPort!])
    }

    @Test func aStickySessionKeepsItsPairAndRanksThroughEitherMeshedRouter() async throws {
        // `manual` chooses each half under its own policy ("prefill:..." and "decode:..."); the
        // mesh must carry both assignments, each with its data-parallel rank, to the other router.
        var fleet = Fleet()
        for i in 0..<2 {
            fleet.prefills.append(try await SimWorkerProcess(name: "p\(i)", ["--role", "prefill", "--bootstrap-port", "0", "--dp-size", "2"]))
            fleet.decodes.append(try await SimWorkerProcess(name: "d\(i)", ["--role", "decode", "--dp-size", "2"]))
        }
        let ports = try (0..<2).map { _ in try freeLoopbackPort() }
        var routers: [RouterProcess] = []
        for i in 0..<2 {
            routers.append(try await RouterProcess(fleet.flags + ["--dp-aware", "--policy", "manual", "--enable-mesh", "--mesh-server-name", "r\(i)",
                                                                  "--mesh-host", "127.0.0.1", "--mesh-port", String(ports[i]), "--mesh-peer-urls", "127.0.0.1:\(ports[1 - i])"]))
        }
        for r in routers {
            try await eventually(timeout: .seconds(15), "the router learned every worker's ranks and has a peer") {
                let listed = try r.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
                let members = try r.request("GET", "/ha/status").json()["members"] as? [[String: Any]] ?? []
                return listed.count == 4 && listed.allSatisfy { $0["dp_size"] as? Int == 2 && $0["is_healthy"] as? Bool == true }
                    && members.contains { $0["status"] as? String == "alive" }
            }
        }
        func placement(_ r: RouterProcess, _ key: String) throws -> String {
            let answer = try r.request("POST", "/generate", body: #"{"text":"turn"}"#, headers: [("X-SMG-Routing-Key", key)])
            #expect(answer.status == 200, "\(answer.text)")
            return ["x-sim-prefill", "x-sim-prefill-dp-rank", "x-sim-worker", "x-sim-dp-rank"].map { answer.header($0) ?? "?" }.joined(separator: "/")
        }
        var homes: [String: String] = [:]
        for k in 0..<12 { homes["session-\(k)"] = try placement(routers[0], "session-\(k)") }
        #expect(Set(homes.values).count > 2, "sessions spread over pairs and ranks: \(homes)")
        try await eventually(timeout: .seconds(5), "r1 sends every session to its pair and ranks") {
            try homes.allSatisfy { key, home in try placement(routers[1], key) == home }
        }
        // And a session placed through r1 keeps its place through r0.
        let late = try placement(routers[1], "late")
        try await eventually(timeout: .seconds(5), "r0 knows r1's session") { try placement(routers[0], "late") == late }
    }

    @Test func prefillAndDecodeWorkersCanBeRegisteredAtRunTime() async throws {
        let fleet = try await Self.fleet(prefills: 1, decodes: 1)
        let r = try await InProcessRouter(["--pd-disaggregation", "--disable-health-check"])
        #expect(try r.request("POST", "/generate", body: #"{"text":"x"}"#).errorCode == "no_prefill_workers")
        let p = fleet.prefills[0]
        #expect(try r.request("POST", "/workers", body: #"{"url":"\#(p.url)","worker_type":"prefill","bootstrap_port":\#(p.bootstrapPort!)}"#).status == 202)
        #expect(try r.request("POST", "/generate", body: #"{"text":"x"}"#).errorCode == "no_decode_workers")
        #expect(try r.request("POST", "/workers", body: #"{"url":"\#(fleet.decodes[0].url)","worker_type":"decode"}"#).status == 202)
        let answer = try r.request("POST", "/generate", body: #"{"text":"x"}"#)
        #expect(answer.status == 200 && answer.header("x-sim-prefill") == "p0", "\(answer.text)")
        for bad in [#"{"url":"http://127.0.0.1:1","worker_type":"middle"}"#, #"{"url":"http://127.0.0.1:1","worker_type":"decode","bootstrap_port":9}"#,
                    #"{"url":"http://127.0.0.1:1","worker_type":"prefill","bootstrap_port":70000}"#] {
            #expect(try r.request("POST", "/workers", body: bad).status == 400, "\(bad)")
        }
    }
}
