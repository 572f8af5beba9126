import Foundation
import TestSupport
import NIOConcurrencyHelpers
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The Conversations API over each history backend, and through more than one router.
@Suite(.serialized) struct ConversationTests {
    @Test func aConversationMadeOnOneRouterIsReadAndExtendedOnAnotherThroughRedis() async throws {
        let redis = try await RedisServer()
        let flags = ["--history-backend", "redis", "--redis-url", redis.url, "--redis-retention-days", "7"]
        let a = try await InProcessRouter(flags)
        let b = try await InProcessRouter(flags)
        let created = try a.request("POST", "/v1/conversations", body: #"{"metadata":{"topic":"routers"},"items":[{"type":"message","role":"user","content":"Hello"},{"role":"assistant","content":[{"type":"output_text","text":"Hi!"}]}]}"#)
        #expect(created.status == 200)
        let conversation = try created.json()
        let id = conversation["id"] as? String ?? ""
        #expect(id.hasPrefix("conv_") && conversation["object"] as? String == "conversation")
        #expect((conversation["metadata"] as? [String: String]) == ["topic": "routers"])

        let read = try b.request("GET", "/v1/conversations/\(id)").json()
        #expect(read["id"] as? String == id && read["created_at"] as? Int == conversation["created_at"] as? Int)
        let added = try b.request("POST", "/v1/conversations/\(id)/items", body: #"{"items":[{"type":"message","role":"user","content":"Third"}]}"#)
        #expect(added.status == 200)
        let third = ((try added.json()["data"] as? [[String: Any]])?.first?["id"] as? String) ?? ""

        let asc = try a.request("GET", "/v1/conversations/\(id)/items?order=asc").json()
        let texts = (asc["data"] as? [[String: Any]] ?? []).map { (($0["content"] as? [[String: Any]])?.first?["text"] as? String) ?? "?" }
        #expect(texts == ["Hello", "Hi!", "Third"])
        #expect(asc["has_more"] as? Bool == false && asc["object"] as? String == "list")
        let page = try a.request("GET", "/v1/conversations/\(id)/items?limit=2").json()
        #expect((page["data"] as? [[String: Any]])?.count == 2 && page["has_more"] as? Bool == true, "desc by default, two of three")
        let rest = try a.request("GET", "/v1/conversations/\(id)/items?limit=2&after=\(page["last_id"] as? String ?? "")").json()
        #expect((rest["data"] as? [[String: Any]])?.count == 1 && rest["has_more"] as? Bool == false)
        let item = try b.request("GET", "/v1/conversations/\(id)/items/\(third)").json()
        #expect(item["role"] as? String == "user" && item["type"] as? String == "message" && item["status"] as? String == "completed")

        // The keys are the reference gateway's, with the retention as a TTL.
        let keys = Set(try redis.cli("KEYS", "*"))
        #expect(keys.contains("conversation:\(id)") && keys.contains("conversation:\(id):items") && keys.contains("item:\(third)"))
        #expect(try redis.cli("HGET", "conversation:\(id)", "metadata") == [#"{"topic":"routers"}"#])
        #expect(try redis.cli("HGET", "item:\(third)", "item_type") == ["message"])
        #expect((Int(try redis.cli("TTL", "conversation:\(id)").first ?? "") ?? 0) > 6 * 86_400)
        #expect(try redis.cli("ZCARD", "conversation:\(id):items") == ["3"])

        #expect(try b.request("DELETE", "/v1/conversations/\(id)/items/\(third)").status == 200)
        #expect(try a.request("GET", "/v1/conversations/\(id)/items/\(third)").status == 404)
        let updated = try a.request("POST", "/v1/conversations/\(id)", body: #"{"metadata":{"topic":"meshes"}}"#).json()
        #expect((updated["metadata"] as? [String: String]) == ["topic": "meshes"])
        let deleted = try b.request("DELETE", "/v1/conversations/\(id)").json()
        #expect(deleted["deleted"] as? Bool == true && deleted["object"] as? String == "conversation.deleted")
        let gone = try a.request("GET", "/v1/conversations/\(id)")
        #expect(gone.status == 404 && gone.errorCode == "conversation_not_found")
    }

    /// Item keys are global in the reference's schema (`item:{id}`): naming another
    /// conversation's item id used to overwrite it, and deleting it through any conversation
    /// deleted it while answering 404; deleting a conversation left its items, and the items
    /// index never expired. Now no request touches an item of a conversation it did not name.
    @Test func inRedisNoConversationTouchesAnotherConversationsItems() async throws {
        let redis = try await RedisServer()
        let smg = try await InProcessRouter(["--history-backend", "redis", "--redis-url", redis.url, "--redis-retention-days", "7"])
        func create(_ body: String) throws -> String { try smg.request("POST", "/v1/conversations", body: body).json()["id"] as? String ?? "" }
        let victim = try create(#"{"items":[{"type":"message","role":"user","content":"secret"}]}"#)
        let victimItem = ((try smg.request("GET", "/v1/conversations/\(victim)/items").json()["data"] as? [[String: Any]])?.first?["id"] as? String) ?? ""
        let attacker = try create(#"{}"#)
        // Adding an item under the victim's item id: stored under a fresh id, the victim's untouched.
        let added = try smg.request("POST", "/v1/conversations/\(attacker)/items",
                                    body: #"{"items":[{"id":"\#(victimItem)","type":"message","role":"user","content":"overwritten"}]}"#)
        #expect(added.status == 200)
        let addedID = ((try added.json()["data"] as? [[String: Any]])?.first?["id"] as? String) ?? ""
        #expect(addedID != victimItem && !addedID.isEmpty)
        #expect(try redis.cli("HGET", "item:\(victimItem)", "content").first?.contains("secret") == true)
        // Deleting it through the other conversation: 404, and it stays.
        #expect(try smg.request("DELETE", "/v1/conversations/\(attacker)/items/\(victimItem)").status == 404)
        #expect(try smg.request("GET", "/v1/conversations/\(victim)/items/\(victimItem)").status == 200)
        #expect(try smg.request("GET", "/v1/conversations/\(attacker)/items/\(victimItem)").status == 404)
        // Its own id again, in its own conversation, is an update of its own item.
        let again = try smg.request("POST", "/v1/conversations/\(victim)/items",
                                    body: #"{"items":[{"id":"\#(victimItem)","type":"message","role":"user","content":"edited"}]}"#)
        #expect(((try again.json()["data"] as? [[String: Any]])?.first?["id"] as? String) == victimItem)
        // The index expires with the retention; a deleted conversation takes its items.
        #expect((Int(try redis.cli("TTL", "conversation:\(victim):items").first ?? "") ?? -1) > 6 * 86_400)
        #expect(try smg.request("DELETE", "/v1/conversations/\(victim)").status == 200)
        #expect(try redis.cli("EXISTS", "item:\(victimItem)") == ["0"])
        #expect(try redis.cli("EXISTS", "item:\(addedID)") == ["1"], "the other conversation's item stays")

        // Eight conversations bring the same new id at once: one takes it, the others get fresh
        // ids, and the item under the id is the content of the conversation that lists it.
        let racers = try (0..<8).map { _ in try create("{}") }
        let answers = NIOLockedValueBox<[Int: String]>([:])
        DispatchQueue.concurrentPerform(iterations: racers.count) { k in
            let r = try? smg.request("POST", "/v1/conversations/\(racers[k])/items",
                                     body: #"{"items":[{"id":"msg_race","type":"message","role":"user","content":"from \#(k)"}]}"#)
            let id = ((try? r?.json())?["data"] as? [[String: Any]])?.first?["id"] as? String
            answers.withLockedValue { $0[k] = id ?? "failed" }
        }
        let ids = answers.withLockedValue { $0 }
        let winners = ids.filter { $0.value == "msg_race" }.map(\.key)
        #expect(winners.count == 1 && Set(ids.values).count == 8 && !ids.values.contains("failed"), "\(ids)")
        if let k = winners.first {
            #expect(try redis.cli("HGET", "item:msg_race", "content").first?.contains("from \(k)") == true)
            #expect(try redis.cli("ZSCORE", "conversation:\(racers[k]):items", "msg_race").first?.isEmpty == false)
        }
    }

    @Test func redisDownMeansHistory503AndChatStillServedAndItRecovers() async throws {
        let redis = try await RedisServer()
        let w = try await InProcessWorker(name: "w")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--history-backend", "redis", "--redis-url", redis.url])
        let id = try smg.request("POST", "/v1/conversations", body: "{}").json()["id"] as? String ?? ""
        redis.stop()
        let down = try smg.request("GET", "/v1/conversations/\(id)")
        #expect(down.status == 503 && down.errorCode == "history_unavailable")
        #expect(try smg.chat("hi").status == 200, "inference does not depend on Redis")
        #expect(try smg.metric(#"smg_history_operations_total{op="get_conversation",result="unavailable"}"#) == 1)
        #expect(try smg.metric(#"smg_history_operations_total{op="create_conversation",result="ok"}"#) == 1)
        try await redis.start()
        try await eventually(timeout: .seconds(10), "history works again without a restart") {
            // The data went with the server (no persistence here); a new conversation proves the connection is back.
            try smg.request("POST", "/v1/conversations", body: "{}").status == 200
        }
    }

    @Test func memoryAndNoneBackendsAndBadInput() async throws {
        let memory = try await InProcessRouter([])
        let id = try memory.request("POST", "/v1/conversations", body: #"{"items":[{"role":"user","content":"x"}]}"#).json()["id"] as? String ?? ""
        #expect(try memory.request("GET", "/v1/conversations/\(id)/items").json()["data"] as? [[String: Any]] != nil)
        for (body, code) in [(#"{"metadata":{"a":1}}"#, "invalid_metadata"), (#"{"items":[{"type":"image","role":"user"}]}"#, "invalid_item"),
                             (#"{"items":[{"role":"robot","content":"x"}]}"#, "invalid_item"), ("[1]", "invalid_json"),
                             (#"{"metadata":{\#((0..<17).map { "\"k\($0)\":\"v\"" }.joined(separator: ","))}}"#, "invalid_metadata"),
                             (#"{"items":[\#(Array(repeating: #"{"role":"user","content":"x"}"#, count: 21).joined(separator: ","))]}"#, "too_many_items")] {
            let r = try memory.request("POST", "/v1/conversations", body: body)
            #expect(r.status == 400 && r.errorCode == code, "\(body.prefix(60)): \(r.status) \(r.errorCode ?? "")")
        }
        #expect(try memory.request("GET", "/v1/conversations/bad%20id").status == 400)
        #expect(try memory.request("PUT", "/v1/conversations/\(id)").status == 405)
        let none = try await InProcessRouter(["--history-backend", "none"])
        let forgotten = try none.request("POST", "/v1/conversations", body: "{}").json()["id"] as? String ?? ""
        #expect(try none.request("GET", "/v1/conversations/\(forgotten)").status == 404, "none: writes accepted, reads empty")
        let keyed = try await InProcessRouter(["--api-key", "k"])
        #expect(try keyed.request("POST", "/v1/conversations", body: "{}").status == 401, "the inference key guards history too")
    }
}
