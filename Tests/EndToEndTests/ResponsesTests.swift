import Foundation
import TestSupport
import Primitives
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// What the simulated worker reports reading (`x-sim-prompt`) for a chat whose messages' texts
/// concatenate to `text`: tests compare it to tell whether history reached the worker.
func simPrompt(_ text: String) -> String { "\(text.count):\(String(FNV1a.hash(text), radix: 16))" }

/// The text of a response object's message output.
private func outputText(_ response: [String: Any]) -> String {
    (response["output"] as? [[String: Any]] ?? []).flatMap { ($0["content"] as? [[String: Any]]) ?? [] }.compactMap { $0["text"] as? String }.joined()
}

/// The Responses API's server-sent events: (type, data) pairs.
private func responseEvents(_ body: [UInt8]) -> [(type: String, data: [String: Any])] {
    String(decoding: body, as: UTF8.self).components(separatedBy: "\n\n").compactMap { block in
        var type: String?
        var data: [String: Any]?
        for line in block.split(separator: "\n") {
            if line.hasPrefix("event: ") { type = String(line.dropFirst(7)) }
            if line.hasPrefix("data: ") { data = try? JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8)) as? [String: Any] }
        }
        guard let type, let data else { return nil }
        return (type, data)
    }
}

extension RouterUnderTest {
    /// `POST /v1/responses` with `body`.
    func respond(_ body: String) throws -> HTTPResponse { try request("POST", "/v1/responses", body: body) }
}

/// The Responses API owned by the gateway: translated to chat completions, stored, and
/// continued from any router that shares the store.
@Suite(.serialized) struct ResponsesTests {
    static let answer = " the model says hello from a simulated worker"

    @Test func aThreeTurnChainMovesBetweenRoutersThroughRedisAndSurvivesAKilledRouter() async throws {
        let redis = try await RedisServer()
        let w = try await SimWorkerProcess(name: "w")
        let flags = ["--worker-urls", w.url, "--history-backend", "redis", "--redis-url", redis.url]
        let a = try await RouterProcess(flags)
        let b = try await RouterProcess(flags)

        let first = try a.respond(#"{"input":"What is a router?","instructions":"Be brief.","safety_identifier":"user-7","metadata":{"t":"1"}}"#)
        #expect(first.status == 200)
        #expect(first.header("x-sim-prompt") == simPrompt("Be brief.What is a router?"), "instructions become the system message")
        let r1 = try first.json()
        let id1 = r1["id"] as? String ?? ""
        #expect(id1.hasPrefix("resp_") && r1["object"] as? String == "response" && r1["status"] as? String == "completed")
        #expect(outputText(r1) == Self.answer)
        let usage = r1["usage"] as? [String: Any] ?? [:]
        #expect(usage["input_tokens"] as? Int == "Be brief.What is a router?".utf8.count && usage["output_tokens"] as? Int == 8 && usage["total_tokens"] as? Int == usage["input_tokens"] as! Int + 8)

        // Turn 2 on router B: the worker reads turn 1's input and output (instructions are not inherited).
        let second = try b.respond(#"{"input":[{"role":"user","content":[{"type":"input_text","text":"And a mesh?"}]}],"previous_response_id":"\#(id1)"}"#)
        #expect(second.status == 200)
        #expect(second.header("x-sim-prompt") == simPrompt("What is a router?" + Self.answer + "And a mesh?"))
        let r2 = try second.json()
        let id2 = r2["id"] as? String ?? ""
        #expect(r2["previous_response_id"] as? String == id1)

        // Router A dies without a goodbye; the conversation goes on through B.
        a.process.signal(SIGKILL)
        let third = try b.respond(#"{"input":"Why both?","previous_response_id":"\#(id2)"}"#)
        #expect(third.header("x-sim-prompt") == simPrompt("What is a router?" + Self.answer + "And a mesh?" + Self.answer + "Why both?"))

        // What was answered is what is stored, and the keys are the reference gateway's.
        let stored = try b.request("GET", "/v1/responses/\(id2)")
        #expect(stored.body == second.body, "GET returns the response exactly as it was answered")
        let inputs = try b.request("GET", "/v1/responses/\(id2)/input_items").json()
        #expect((inputs["data"] as? [[String: Any]])?.count == 1 && inputs["object"] as? String == "list")
        #expect(try redis.cli("HGET", "response:\(id2)", "previous_response_id") == [id1])
        #expect(try redis.cli("HGET", "response:\(id1)", "safety_identifier") == ["user-7"])
        #expect(try redis.cli("ZRANGE", "safety:user-7:responses", "0", "-1") == [id1])
        #expect(try redis.cli("HGET", "response:\(id1)", "model") == ["sim-model"])
        let raw = try redis.cli("HGET", "response:\(id1)", "raw_response").joined()
        #expect(raw.contains(id1) && raw.contains("\"output\""))
        #expect((Int(try redis.cli("TTL", "response:\(id1)").first ?? "") ?? 0) > 29 * 86_400, "kept --redis-retention-days (30)")

        // Deleted: gone for GET, and a chain through it is refused by name.
        let deleted = try b.request("DELETE", "/v1/responses/\(id2)").json()
        #expect(deleted["deleted"] as? Bool == true)
        #expect(try b.request("GET", "/v1/responses/\(id2)").errorCode == "response_not_found")
        let orphan = try b.respond(#"{"input":"x","previous_response_id":"\#(id2)"}"#)
        #expect(orphan.status == 400 && orphan.errorCode == "previous_response_not_found")
        #expect(try b.metric(#"smg_history_operations_total{op="save_response",result="ok"}"#) == 2, "turns 2 and 3")
        #expect(try b.metric(#"smg_history_operations_total{op="load_history",result="ok"}"#) == 2)
        #expect(try b.metric(#"smg_redis_pool_connections{use="history",state="open"}"#) >= 1)
        #expect(try b.metric(#"smg_redis_pool_max_connections{use="history"}"#) == 16)
    }

    @Test func aConversationCollectsEachTurnAndReplaysIt() async throws {
        let redis = try await RedisServer()
        let w = try await InProcessWorker(name: "w")
        let flags = ["--worker-urls", w.url, "--history-backend", "redis", "--redis-url", redis.url]
        let a = try await InProcessRouter(flags)
        let b = try await InProcessRouter(flags)
        let conversation = try a.request("POST", "/v1/conversations", body: #"{"items":[{"role":"user","content":"Remember: blue."}]}"#).json()["id"] as? String ?? ""

        let first = try a.respond(#"{"input":"Which color?","conversation":"\#(conversation)"}"#)
        #expect(first.header("x-sim-prompt") == simPrompt("Remember: blue.Which color?"))
        #expect((try first.json()["conversation"] as? [String: Any])?["id"] as? String == conversation)
        let second = try b.respond(#"{"input":"Sure?","conversation":{"id":"\#(conversation)"}}"#)
        #expect(second.header("x-sim-prompt") == simPrompt("Remember: blue.Which color?" + Self.answer + "Sure?"))

        let items = try b.request("GET", "/v1/conversations/\(conversation)/items?order=asc").json()["data"] as? [[String: Any]] ?? []
        #expect(items.map { $0["role"] as? String ?? "?" } == ["user", "user", "assistant", "user", "assistant"])
        let firstID = try first.json()["id"] as? String ?? ""
        let turnItem = items[1]["id"] as? String ?? ""
        #expect(try redis.cli("HGET", "item:\(turnItem)", "response_id") == [firstID], "items remember the response they came with")

        let unknown = try a.respond(#"{"input":"x","conversation":"conv_missing"}"#)
        #expect(unknown.status == 404 && unknown.errorCode == "conversation_not_found")
    }

    @Test func streamedEventsComeInOrderAndTheStoredResponseIsWhatWasStreamed() async throws {
        let w = try await InProcessWorker(name: "w", ["--tokens-per-second", "200"])
        let smg = try await InProcessRouter(["--worker-urls", w.url])
        let r = try smg.respond(#"{"input":"Stream it","stream":true}"#)
        #expect(r.status == 200 && r.header("content-type") == "text/event-stream")
        let events = responseEvents(r.body)
        let types = events.map(\.type)
        let expected = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
            + Array(repeating: "response.output_text.delta", count: 8)
            + ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
        #expect(types == expected)
        #expect(events.map { $0.data["sequence_number"] as? Int ?? -1 } == Array(0..<events.count))
        #expect(events.allSatisfy { $0.data["type"] as? String == $0.type })
        let streamed = events.filter { $0.type == "response.output_text.delta" }.compactMap { $0.data["delta"] as? String }.joined()
        #expect(streamed == Self.answer)
        let completed = events.last?.data["response"] as? [String: Any] ?? [:]
        #expect(outputText(completed) == streamed && completed["status"] as? String == "completed")
        let id = completed["id"] as? String ?? ""
        let stored = try smg.request("GET", "/v1/responses/\(id)").json()
        #expect(outputText(stored) == streamed && (stored["usage"] as? [String: Any])?["output_tokens"] as? Int == 8)

        // A turn after a streamed one replays it like any other.
        let next = try smg.respond(#"{"input":"Again","previous_response_id":"\#(id)"}"#)
        #expect(next.header("x-sim-prompt") == simPrompt("Stream it" + Self.answer + "Again"))

        // Stopped at max_output_tokens: incomplete, said so.
        let capped = responseEvents(try smg.respond(#"{"input":"x","stream":true,"max_output_tokens":2}"#).body)
        #expect(capped.last?.type == "response.incomplete")
        #expect(((capped.last?.data["response"] as? [String: Any])?["incomplete_details"] as? [String: Any])?["reason"] as? String == "max_output_tokens")
        #expect(((capped.last?.data["response"] as? [String: Any])?["output"] as? [[String: Any]])?.first?["status"] as? String == "incomplete",
                "the truncated message is marked incomplete too")
    }

    @Test func historySurvivesRestartingEveryRouterAndRedis() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("smg-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let redis = try await RedisServer(persistentIn: directory)
        let w = try await SimWorkerProcess(name: "w")
        let flags = ["--worker-urls", w.url, "--history-backend", "redis", "--redis-url", redis.url]
        var a: RouterProcess? = try await RouterProcess(flags)
        let conversation = try a!.request("POST", "/v1/conversations", body: "{}").json()["id"] as? String ?? ""
        let first = try a!.respond(#"{"input":"Keep this.","conversation":"\#(conversation)"}"#).json()["id"] as? String ?? ""
        a!.process.signal(SIGKILL)
        a = nil
        redis.stop()  // SIGKILL: only what was fsynced survives
        try await redis.start()
        let b = try await RouterProcess(flags)
        let items = try b.request("GET", "/v1/conversations/\(conversation)/items").json()["data"] as? [[String: Any]]
        #expect(items?.count == 2)
        let next = try b.respond(#"{"input":"Still there?","previous_response_id":"\#(first)"}"#)
        #expect(next.status == 200 && next.header("x-sim-prompt") == simPrompt("Keep this." + Self.answer + "Still there?"))
    }

    @Test func withRedisDownAnswersStillComeMarkedAndHistoryIs503() async throws {
        let redis = try await RedisServer()
        let w = try await InProcessWorker(name: "w")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--history-backend", "redis", "--redis-url", redis.url])
        let kept = try smg.respond(#"{"input":"before"}"#).json()["id"] as? String ?? ""
        redis.stop()
        let answered = try smg.respond(#"{"input":"during"}"#)
        #expect(answered.status == 200 && answered.header("x-smg-history-write") == "deferred", "answered, and marked as not stored yet")
        #expect(outputText(try answered.json()) == Self.answer)
        let duringID = try answered.json()["id"] as? String ?? ""
        #expect(try smg.metric(#"smg_history_operations_total{op="save_response",result="unavailable"}"#) == 1)
        let chained = try smg.respond(#"{"input":"x","previous_response_id":"\#(kept)"}"#)
        #expect(chained.status == 503 && chained.errorCode == "history_unavailable")
        let unstored = try smg.respond(#"{"input":"not kept","store":false}"#)
        #expect(unstored.status == 200 && unstored.header("x-smg-history-write") == nil, "store: false needs no store")
        // The deferred turn is held by this router until written: the client's next turn finds
        // it at once (a chain of held turns needs no store), and so does a GET.
        #expect(try smg.request("GET", "/v1/responses/\(duringID)").status == 200)
        let onDeferred = try smg.respond(#"{"input":"and then","previous_response_id":"\#(duringID)"}"#)
        #expect(onDeferred.status == 200 && onDeferred.header("x-smg-history-write") == "deferred")
        #expect(onDeferred.header("x-sim-prompt") == simPrompt("during" + Self.answer + "and then"), "the held turn is the history")
        let onDeferredID = try onDeferred.json()["id"] as? String ?? ""
        // A held turn the client deletes is dropped, and its pending write is not made.
        let dropped = try smg.respond(#"{"input":"forget me"}"#).json()["id"] as? String ?? ""
        #expect(try smg.request("DELETE", "/v1/responses/\(dropped)").status == 200)
        #expect(try smg.request("GET", "/v1/responses/\(dropped)").status == 503, "no longer held; the store is down")
        try await redis.start()
        try await eventually(timeout: .seconds(10), "responses are stored again without a restart") {
            try smg.respond(#"{"input":"after"}"#).header("x-smg-history-write") == nil
        }
        // The answer given while Redis was down was written once it came back: its conversation
        // can go on. (Retries back off to 14 s; the whole schedule is about 30 s.)
        try await eventually(timeout: .seconds(35), "the deferred writes landed") {
            try smg.metric(#"smg_history_operations_total{op="save_response",result="ok_after_retry"}"#) == 2
        }
        let other = try await InProcessRouter(["--worker-urls", w.url, "--history-backend", "redis", "--redis-url", redis.url])
        #expect(try other.request("GET", "/v1/responses/\(duringID)").status == 200, "in the store, not only held")
        #expect(try other.request("GET", "/v1/responses/\(onDeferredID)").status == 200)
        #expect(try other.request("GET", "/v1/responses/\(dropped)").status == 404, "deleted while held: never written")
    }

    @Test func aWorkerAnswerThatBreaksOffIsAClearErrorAndNothingIsStored() async throws {
        let w = try await InProcessWorker(name: "w")
        let smg = try await InProcessRouter(["--worker-urls", w.url])
        try w.setFaults("cut_rate=1")
        let whole = try smg.respond(#"{"input":"x"}"#)
        #expect(whole.status == 502 && whole.errorCode == "upstream_error", "a collected answer that broke off: \(whole.status)")
        let streamed = try smg.respond(#"{"input":"x","stream":true}"#)
        let events = responseEvents(streamed.body)
        #expect(streamed.status == 200 && events.last?.type == "response.failed")
        let id = (events.first?.data["response"] as? [String: Any])?["id"] as? String ?? ""
        let lookup = try smg.request("GET", "/v1/responses/\(id)")
        #expect(!id.isEmpty && lookup.status == 404, "a failed stream stores nothing")
        try w.setFaults("cut_rate=0")
        #expect(try smg.respond(#"{"input":"x","stream":true}"#).status == 200)
        #expect(try smg.respond(#"{"input":"x"}"#).status == 200, "the connection is usable again")
    }

    @Test func badRequestsGetClearErrors() async throws {
        let w = try await InProcessWorker(name: "w")
        let smg = try await InProcessRouter(["--worker-urls", w.url])
        for (body, code) in [("[1]", "invalid_json"), (#"{"input":42}"#, "invalid_input"), (#"{"input":[]}"#, "invalid_input"),
                             (#"{"input":[{"role":"robot","content":"x"}]}"#, "invalid_input"),
                             (#"{"input":"x","previous_response_id":"resp_a","conversation":"conv_b"}"#, "conflicting_history"),
                             (#"{"input":"x","previous_response_id":"resp_unknown"}"#, "previous_response_not_found"),
                             (#"{"input":"x","tools":[{"type":"web_search"}]}"#, "unsupported_tool"),
                             (#"{"input":"x","temperature":7}"#, "invalid_temperature"),
                             (#"{"input":"x","tool_choice":"sometimes"}"#, "invalid_tool_choice"),
                             (#"{"input":"x","metadata":{"a":1}}"#, "invalid_metadata")] {
            let r = try smg.respond(body)
            #expect(r.status == 400 && r.errorCode == code, "\(body): \(r.status) \(r.errorCode ?? "")")
        }
        let unstored = try smg.respond(#"{"input":"x","store":false}"#).json()
        #expect(unstored["store"] as? Bool == false)
        #expect(try smg.request("GET", "/v1/responses/\(unstored["id"] as? String ?? "")").status == 404, "store: false keeps nothing")
        #expect(try smg.request("PUT", "/v1/responses/resp_x").status == 405)
        #expect(try smg.request("GET", "/v1/responses/a/b/c").status == 404)
        let unknownModel = try smg.respond(#"{"model":"nope","input":"x"}"#)
        #expect(unknownModel.status == 404 && unknownModel.errorCode == "model_not_found", "the pipeline's own errors pass through")
        let keyed = try await InProcessRouter(["--worker-urls", w.url, "--api-key", "k"])
        #expect(try keyed.respond(#"{"input":"x"}"#).status == 401)
        #expect(try keyed.request("POST", "/v1/responses", body: #"{"input":"x"}"#, headers: [("authorization", "Bearer k")]).status == 200)
    }
    /// `--history-max-item-bytes`: a request's item over it is refused before any worker sees
    /// it (where it would be stored), and an answer whose output is over it is answered, not stored.
    @Test func anItemOverTheByteCapIsRefusedOrLeftUnstored() async throws {
        let w = try await InProcessWorker(name: "w")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--history-max-item-bytes", "2048"])
        let large = String(repeating: "x", count: 3000)
        let refused = try smg.respond(#"{"input":"\#(large)"}"#)
        #expect(refused.status == 400 && refused.errorCode == "item_too_large", "\(refused.status) \(refused.text)")
        #expect(refused.text.contains("input[0]") && refused.text.contains("--history-max-item-bytes"))
        #expect(try smg.respond(#"{"input":"\#(large)","store":false}"#).status == 200, "nothing stored, nothing to bound")

        let conversation = try smg.request("POST", "/v1/conversations", body: "{}").json()["id"] as? String ?? ""
        let item = try smg.request("POST", "/v1/conversations/\(conversation)/items",
                                   body: #"{"items":[{"role":"user","content":"small"},{"role":"user","content":"\#(large)"}]}"#)
        #expect(item.status == 400 && item.errorCode == "item_too_large" && item.text.contains("items[1]"))
        let kept = try smg.request("GET", "/v1/conversations/\(conversation)/items").json()["data"] as? [Any]
        #expect(kept?.count == 0, "a refused request adds none of its items")

        let long = try smg.respond(#"{"input":"x","max_output_tokens":600}"#)
        #expect(long.status == 200 && long.header("x-smg-history-write") == "too_large")
        #expect(try smg.request("GET", "/v1/responses/\(try long.json()["id"] as? String ?? "")").status == 404)
        let short = try smg.respond(#"{"input":"x","max_output_tokens":20}"#)
        #expect(short.status == 200 && short.header("x-smg-history-write") == nil)
        #expect(try smg.request("GET", "/v1/responses/\(try short.json()["id"] as? String ?? "")").status == 200)
    }
}
