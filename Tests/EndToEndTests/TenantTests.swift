import Foundation
import Testing

/// Stored conversations, their items and responses belong to the tenant that made them
/// (`--tenant-api-key TENANT_ID:KEY`, or `--trust-tenant-header`): another tenant gets 404 on
/// read, extend and delete, as if they did not exist; records stored without a tenant stay
/// readable by every caller. Before, anyone holding an id read, extended or deleted it.
@Suite(.serialized) struct TenantTests {
    static func bearer(_ key: String) -> [(String, String)] { [("authorization", "Bearer \(key)")] }

    /// Every route under one conversation and one stored response, as `caller`: the statuses.
    static func reach(_ r: RouterProcess, conversation: String, item: String, response: String, as caller: [(String, String)]) throws -> [Int] {
        [try r.request("GET", "/v1/conversations/\(conversation)", headers: caller).status,
         try r.request("GET", "/v1/conversations/\(conversation)/items", headers: caller).status,
         try r.request("GET", "/v1/conversations/\(conversation)/items/\(item)", headers: caller).status,
         try r.request("POST", "/v1/conversations/\(conversation)/items", body: #"{"items":[{"role":"user","content":"x"}]}"#, headers: caller).status,
         try r.request("POST", "/v1/conversations/\(conversation)", body: #"{"metadata":{"a":"b"}}"#, headers: caller).status,
         try r.request("GET", "/v1/responses/\(response)", headers: caller).status,
         try r.request("GET", "/v1/responses/\(response)/input_items", headers: caller).status]
    }

    static func isolation(_ r: RouterProcess, a: [(String, String)], b: [(String, String)]) throws {
        let conversation = try r.request("POST", "/v1/conversations", body: #"{"items":[{"role":"user","content":"a's secret"}]}"#, headers: a).json()["id"] as? String ?? ""
        let item = ((try r.request("GET", "/v1/conversations/\(conversation)/items", headers: a).json()["data"] as? [[String: Any]])?.first?["id"] as? String) ?? ""
        let turn = try r.request("POST", "/v1/responses", body: #"{"model":"sim-model","input":"a's question","conversation":"\#(conversation)"}"#, headers: a)
        #expect(turn.status == 200, "\(turn.text)")
        let response = try turn.json()["id"] as? String ?? ""
        #expect(try reach(r, conversation: conversation, item: item, response: response, as: b) == Array(repeating: 404, count: 7), "the other tenant finds nothing")
        let chained = try r.request("POST", "/v1/responses", body: #"{"model":"sim-model","input":"x","previous_response_id":"\#(response)"}"#, headers: b)
        #expect(chained.status == 400 && chained.errorCode == "previous_response_not_found")
        let viaConversation = try r.request("POST", "/v1/responses", body: #"{"model":"sim-model","input":"x","conversation":"\#(conversation)"}"#, headers: b)
        #expect(viaConversation.status == 404)
        #expect(try r.request("DELETE", "/v1/conversations/\(conversation)/items/\(item)", headers: b).status == 404)
        #expect(try r.request("DELETE", "/v1/responses/\(response)", headers: b).status == 404)
        #expect(try r.request("DELETE", "/v1/conversations/\(conversation)", headers: b).status == 404)
        // Its own tenant reaches all of it, and what b tried changed nothing.
        #expect(try reach(r, conversation: conversation, item: item, response: response, as: a) == Array(repeating: 200, count: 7))
        #expect(try r.request("POST", "/v1/responses", body: #"{"model":"sim-model","input":"more","previous_response_id":"\#(response)"}"#, headers: a).status == 200)
        #expect(try r.request("DELETE", "/v1/conversations/\(conversation)", headers: a).status == 200)
    }

    @Test func tenantKeysKeepEachTenantsHistoryItsOwn() async throws {
        let w = try await SimWorkerProcess(name: "w")
        let r = try await RouterProcess(["--worker-urls", w.url, "--api-key", "shared", "--tenant-api-key", "acme:key-a", "--tenant-api-key", "globex:key-b"])
        try Self.isolation(r, a: Self.bearer("key-a"), b: Self.bearer("key-b"))
        // Without a key, nothing; with --api-key, no tenant: a's records are not its either.
        #expect(try r.request("GET", "/v1/conversations/conv_x").status == 401)
        let shared = try r.request("POST", "/v1/conversations", body: #"{}"#, headers: Self.bearer("shared")).json()["id"] as? String ?? ""
        // Stored without a tenant: every caller reads it.
        for key in ["key-a", "key-b", "shared"] {
            #expect(try r.request("GET", "/v1/conversations/\(shared)", headers: Self.bearer(key)).status == 200, "\(key)")
        }
        let mine = try r.request("POST", "/v1/conversations", body: #"{}"#, headers: Self.bearer("key-a")).json()["id"] as? String ?? ""
        #expect(try r.request("GET", "/v1/conversations/\(mine)", headers: Self.bearer("shared")).status == 404)
        // A tenant key wins over a header claiming another tenant.
        #expect(try r.request("GET", "/v1/conversations/\(mine)", headers: Self.bearer("key-b") + [("x-smg-tenant-id", "acme")]).status == 404)
    }

    @Test func aTrustedHeaderNamesTheTenantAndRedisKeepsIt() async throws {
        let redis = try await RedisProcess()
        let w = try await SimWorkerProcess(name: "w")
        let r = try await RouterProcess(["--worker-urls", w.url, "--api-key", "gw", "--trust-tenant-header", "--tenant-header-name", "X-Org",
                                         "--history-backend", "redis", "--redis-url", redis.url])
        try Self.isolation(r, a: Self.bearer("gw") + [("x-org", "team-1")], b: Self.bearer("gw") + [("x-org", "team-2")])
        let c = try r.request("POST", "/v1/conversations", body: #"{}"#, headers: Self.bearer("gw") + [("x-org", "team-1")]).json()["id"] as? String ?? ""
        #expect(try redis.cli("HGET", "conversation:\(c)", "tenant_id") == ["team-1"])
        #expect(try r.request("GET", "/v1/conversations/\(c)", headers: Self.bearer("gw")).status == 404, "no header: no tenant")
        // Without --trust-tenant-header the header is ignored: no tenant, and the record is shared.
        let untrusting = try await RouterProcess(["--worker-urls", w.url, "--api-key", "gw", "--history-backend", "redis", "--redis-url", redis.url])
        let open = try untrusting.request("POST", "/v1/conversations", body: #"{}"#, headers: Self.bearer("gw") + [("x-org", "team-1")]).json()["id"] as? String ?? ""
        #expect(try untrusting.request("GET", "/v1/conversations/\(open)", headers: Self.bearer("gw") + [("x-org", "team-2")]).status == 200)
    }
}
