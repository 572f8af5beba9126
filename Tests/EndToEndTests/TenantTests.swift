import Foundation
import TestSupport
import Testing

/// Stored conversations, their items and responses belong to the tenant that made them
/// (`--tenant-api-key TENANT_ID:KEY`, or `--trust-tenant-header`): another tenant gets 404 on
/// read, extend and delete, as if they did not exist; records stored without a tenant stay
/// readable by every caller. Before, anyone holding an id read, extended or deleted it.
@Suite(.serialized) struct TenantTests {
    static func bearer(_ key: String) -> [(String, String)] { [("authorization", "Bearer \(key)")] }

    /// Every route under one conversation and one stored response, as `caller`: the statuses.
    static func reach(_ r: any RouterUnderTest, conversation: String, item: String, response: String, as caller: [(String, String)]) throws -> [Int] {
        [try r.request("GET", "/v1/conversations/\(conversation)", headers: caller).status,
         try r.request("GET", "/v1/conversations/\(conversation)/items", headers: caller).status,
         try r.request("GET", "/v1/conversations/\(conversation)/items/\(item)", headers: caller).status,
         try r.request("POST", "/v1/conversations/\(conversation)/items", body: #"{"items":[{"role":"user","content":"x"}]}"#, headers: caller).status,
         try r.request("POST", "/v1/conversations/\(conversation)", body: #"{"metadata":{"a":"b"}}"#, headers: caller).status,
         try r.request("GET", "/v1/responses/\(response)", headers: caller).status,
         try r.request("GET", "/v1/responses/\(response)/input_items", headers: caller).status]
    }

    static func isolation(_ r: any RouterUnderTest, a: [(String, String)], b: [(String, String)]) throws {
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
        let w = try await InProcessWorker(name: "w")
        let r = try await InProcessRouter(["--worker-urls", w.url, "--api-key", "shared", "--tenant-api-key", "acme:key-a", "--tenant-api-key", "globex:key-b"])
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
        let redis = try await RedisServer()
        let w = try await InProcessWorker(name: "w")
        let r = try await InProcessRouter(["--worker-urls", w.url, "--api-key", "gw", "--trust-tenant-header", "--tenant-header-name", "X-Org",
                                         "--history-backend", "redis", "--redis-url", redis.url])
        try Self.isolation(r, a: Self.bearer("gw") + [("x-org", "team-1")], b: Self.bearer("gw") + [("x-org", "team-2")])
        let c = try r.request("POST", "/v1/conversations", body: #"{}"#, headers: Self.bearer("gw") + [("x-org", "team-1")]).json()["id"] as? String ?? ""
        #expect(try redis.cli("HGET", "conversation:\(c)", "tenant_id") == ["team-1"])
        #expect(try r.request("GET", "/v1/conversations/\(c)", headers: Self.bearer("gw")).status == 404, "no header: no tenant")
        // Without --trust-tenant-header the header is ignored: no tenant, and the record is shared.
        let untrusting = try await InProcessRouter(["--worker-urls", w.url, "--api-key", "gw", "--history-backend", "redis", "--redis-url", redis.url])
        let open = try untrusting.request("POST", "/v1/conversations", body: #"{}"#, headers: Self.bearer("gw") + [("x-org", "team-1")]).json()["id"] as? String ?? ""
        #expect(try untrusting.request("GET", "/v1/conversations/\(open)", headers: Self.bearer("gw") + [("x-org", "team-2")]).status == 200)
    }
    /// A tenant's sticky sessions are its own: the same `x-smg-routing-key` from two tenants is two
    /// sessions, each kept where it was placed, and the session store keeps the tenant with the
    /// key. Before, a tenant could pin, move or follow another tenant's session by naming its key.
    @Test func eachTenantsRoutingKeysAreItsOwnSessions() async throws {
        let redis = try await RedisServer()
        var workers: [InProcessWorker] = []
        for name in ["a", "b", "c", "d"] { workers.append(try await InProcessWorker(name: name)) }
        let r = try await InProcessRouter(["--worker-urls"] + workers.map(\.url) + ["--policy", "manual", "--session-store", "redis", "--redis-url", redis.url,
                                         "--api-key", "shared", "--tenant-api-key", "acme:key-a", "--tenant-api-key", "globex:key-b"])
        func placement(_ key: String) throws -> [String] {
            try (0..<8).map { try r.chat("x", headers: Self.bearer(key) + [("x-smg-routing-key", "session-\($0)")]).header("x-sim-worker") ?? "?" }
        }
        let acme = try placement("key-a"), globex = try placement("key-b"), shared = try placement("shared")
        #expect(try placement("key-a") == acme && placement("key-b") == globex && placement("shared") == shared, "each keeps its own")
        // Eight keys placed at random over four workers agree by chance with probability 4^-8.
        #expect(acme != globex && acme != shared, "\(acme) \(globex) \(shared)")
        let stored = try redis.cli("--scan", "--pattern", "smg:session:*session-0")
        #expect(stored.count == 3, "\(stored)")
        #expect(stored.contains { $0.hasSuffix(":acme\u{1F}session-0") } && stored.contains { $0.hasSuffix(":globex\u{1F}session-0") })
        #expect(stored.contains { $0.hasSuffix(":session-0") && !$0.contains("\u{1F}") }, "a key without a tenant is as before")
    }
}
