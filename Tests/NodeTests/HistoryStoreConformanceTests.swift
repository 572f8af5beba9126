import Foundation
import Logging
@testable import Node
import NIOPosix
import PostgresNIO
import Testing
import TestSupport

/// One suite, every backend: what the Conversations and Responses APIs rely on behaves the same
/// in memory, in Redis (a real `redis-server`) and in PostgreSQL (a real server).
@Suite(.serialized) struct HistoryStoreConformanceTests {
    enum Backend: String, CaseIterable, CustomTestStringConvertible {
        case memory, redis, postgres
        var testDescription: String { rawValue }
    }

    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// A fresh store of `backend`, and what keeps its server alive for the test.
    final class Fixture: @unchecked Sendable {
        let store: any HistoryStore
        private let keep: [AnyObject]
        private let running: Task<Void, Never>?

        init(_ backend: Backend) async throws {
            switch backend {
            case .memory:
                store = MemoryHistoryStore()
                keep = []
                running = nil
            case .redis:
                let server = try await RedisServer()
                let client = RedisClient(url: try RedisURL(parsing: server.url), group: HistoryStoreConformanceTests.group, logger: HistoryStoreConformanceTests.logger)
                store = RedisHistoryStore(redis: client, retentionDays: -1)
                keep = [server, client]
                running = nil
            case .postgres:
                let server = try await PostgresServer()
                let configuration = try RouterNode.postgresConfiguration(try PostgresURL(parsing: server.url), poolSize: 4, timeoutSecs: 5,
                                                                         tls: RouterConfig.load(arguments: [], environment: [:]).tls)
                let client = PostgresClient(configuration: configuration, eventLoopGroup: HistoryStoreConformanceTests.group,
                                            backgroundLogger: HistoryStoreConformanceTests.logger)
                running = Task { await client.run() }
                store = PostgresHistoryStore(client: client, timeout: .seconds(5), retention: nil, logger: HistoryStoreConformanceTests.logger)
                keep = [server, client]
            }
        }

        deinit { running?.cancel() }
    }

    static func item(_ id: String, _ text: String = "hi", at ms: Double = 0, fromClient: Bool = false) -> ConversationItem {
        var item = ConversationItem(id: id, type: "message", role: "user", content: .array([.object(["type": "input_text", "text": .string(text)])]),
                                    createdAt: Date(timeIntervalSince1970: 1_700_000_000 + ms / 1000))
        item.idFromClient = fromClient
        return item
    }

    @Test(arguments: Backend.allCases)
    func conversationsAndTheirItems(_ backend: Backend) async throws {
        let f = try await Fixture(backend)
        let s = f.store
        let c = try await s.createConversation(metadata: ["topic": "routers"], items: [Self.item("msg_a", at: 1), Self.item("msg_b", at: 2)], tenant: "t1")
        let read = try #require(try await s.conversation(c.id))
        #expect(read.metadata == ["topic": "routers"] && read.tenant == "t1" && abs(read.createdAt.timeIntervalSince(c.createdAt)) < 0.01)
        #expect(try await s.updateConversation(c.id, metadata: ["topic": "mesh"])?.metadata == ["topic": "mesh"])
        #expect(try await s.conversation(c.id)?.metadata == ["topic": "mesh"])
        #expect(try await s.updateConversation("conv_missing", metadata: [:]) == nil)

        let added = try #require(try await s.addItems([Self.item("msg_c", at: 3), Self.item("msg_d", at: 3), Self.item("msg_e", at: 5)], to: c.id))
        #expect(added.map(\.id) == ["msg_c", "msg_d", "msg_e"])
        #expect(try await s.addItems([Self.item("msg_x")], to: "conv_missing") == nil)

        // Pages: ascending and descending, after an item, `hasMore`; same-millisecond items in order.
        let first = try #require(try await s.items(of: c.id, limit: 2, ascending: true, after: nil))
        #expect(first.items.map(\.id) == ["msg_a", "msg_b"] && first.hasMore)
        let second = try #require(try await s.items(of: c.id, limit: 2, ascending: true, after: "msg_b"))
        #expect(second.items.map(\.id) == ["msg_c", "msg_d"] && second.hasMore)
        let last = try #require(try await s.items(of: c.id, limit: 2, ascending: true, after: "msg_d"))
        #expect(last.items.map(\.id) == ["msg_e"] && !last.hasMore)
        let newest = try #require(try await s.items(of: c.id, limit: 3, ascending: false, after: nil))
        #expect(newest.items.map(\.id) == ["msg_e", "msg_d", "msg_c"] && newest.hasMore)
        let older = try #require(try await s.items(of: c.id, limit: 10, ascending: false, after: "msg_c"))
        #expect(older.items.map(\.id) == ["msg_b", "msg_a"] && !older.hasMore)
        #expect(try await s.items(of: "conv_missing", limit: 10, ascending: true, after: nil) == nil)

        let one = try #require(try await s.item("msg_c", of: c.id))
        #expect(one.role == "user" && one.type == "message" && one.content == Self.item("msg_c").content)

        // Another conversation cannot reach these items: not by reading, deleting or reusing an id.
        let other = try await s.createConversation(metadata: [:], items: [], tenant: nil)
        #expect(try await s.item("msg_c", of: other.id) == nil)
        #expect(try await s.deleteItem("msg_c", of: other.id) == false)
        let taken = try #require(try await s.addItems([Self.item("msg_c", "hijack", fromClient: true)], to: other.id))
        // Stores that key items by id alone (Redis, PostgreSQL) give it a fresh id; memory keeps
        // items per conversation. Either way the other conversation's item is untouched.
        let listedThere = try await s.items(of: other.id, limit: 10, ascending: true, after: nil)?.items
        #expect(taken.count == 1 && listedThere?.map(\.id) == taken.map(\.id) && listedThere?.first?.content == Self.item("x", "hijack").content)
        #expect(try await s.item("msg_c", of: c.id)?.content == Self.item("msg_c").content, "the first conversation's item is unchanged")
        // The same id again in its own conversation replaces its item.
        _ = try await s.addItems([Self.item("msg_c", "again", at: 3, fromClient: true)], to: c.id)
        #expect(try await s.item("msg_c", of: c.id)?.content == Self.item("msg_c", "again").content)
        #expect(try await s.items(of: c.id, limit: 10, ascending: true, after: nil)?.items.count == 5)

        #expect(try await s.deleteItem("msg_b", of: c.id))
        #expect(try await s.items(of: c.id, limit: 10, ascending: true, after: nil)?.items.map(\.id) == ["msg_a", "msg_c", "msg_d", "msg_e"])
        #expect(try await s.deleteConversation(c.id))
        #expect(try await s.conversation(c.id) == nil)
        #expect(try await s.item("msg_a", of: c.id) == nil, "its items went with it")
        #expect(try await s.deleteConversation(c.id) == false)
        #expect(try await s.conversation(other.id) != nil, "the other conversation stays")
    }

    @Test(arguments: Backend.allCases)
    func responsesTheirChainsAndTheirConversation(_ backend: Backend) async throws {
        let f = try await Fixture(backend)
        let s = f.store
        let c = try await s.createConversation(metadata: [:], items: [], tenant: "t1")
        let raw: JSONValue = ["id": "resp_1", "object": "response", "output": .array([])]
        let first = StoredResponse(id: "resp_1", previousResponseID: nil, conversationID: c.id, input: [Self.item("msg_in1", "first")],
                                   createdAt: Date(timeIntervalSince1970: 1_700_000_000), safetyIdentifier: "user-7", model: "m", raw: raw, tenant: "t1")
        try await s.saveResponse(first, appendingTo: c.id, items: [Self.item("msg_in1", "first", at: 1), Self.item("msg_out1", "answer", at: 2)])
        // Written again (a deferred write repeated): nothing doubles.
        try await s.saveResponse(first, appendingTo: c.id, items: [Self.item("msg_in1", "first", at: 1), Self.item("msg_out1", "answer", at: 2)])
        #expect(try await s.items(of: c.id, limit: 10, ascending: true, after: nil)?.items.map(\.id) == ["msg_in1", "msg_out1"])
        let second = StoredResponse(id: "resp_2", previousResponseID: "resp_1", conversationID: nil, input: [Self.item("msg_in2", "second")],
                                createdAt: Date(timeIntervalSince1970: 1_700_000_001), safetyIdentifier: nil, model: nil, raw: ["id": "resp_2"], tenant: nil)
        try await s.saveResponse(second, appendingTo: nil, items: [])

        let read = try #require(try await s.response("resp_1"))
        #expect(read.previousResponseID == nil && read.conversationID == c.id && read.safetyIdentifier == "user-7" && read.model == "m" && read.tenant == "t1")
        #expect(read.raw == raw && read.input.map(\.id) == ["msg_in1"] && read.createdAt == first.createdAt)
        let chain = try #require(try await s.responseChain("resp_2", visibleTo: "t1"))
        #expect(chain.map(\.id) == ["resp_1", "resp_2"], "root first")
        #expect(try await s.response("resp_missing") == nil)
        #expect(try await s.deleteResponse("resp_1"))
        #expect(try await s.response("resp_1") == nil)
        #expect(try await s.deleteResponse("resp_1") == false)
        #expect(try await s.responseChain("resp_2", visibleTo: "t1")?.map(\.id) == ["resp_2"], "a deleted link ends the chain")
        #expect(try await s.responseChain("resp_2", visibleTo: "t2")?.map(\.id) == ["resp_2"], "resp_2 has no tenant")
    }

    /// Routers that start together against a fresh database: each migration step is applied
    /// once (the advisory lock), and a database a later smg migrated is refused, not written.
    @Test func theSchemaIsMigratedOnceByRoutersStartingTogetherAndANewerOneIsRefused() async throws {
        let server = try await PostgresServer()
        let configuration = try RouterNode.postgresConfiguration(try PostgresURL(parsing: server.url), poolSize: 2, timeoutSecs: 5,
                                                                 tls: RouterConfig.load(arguments: [], environment: [:]).tls)
        var clients: [PostgresClient] = []
        var runs: [Task<Void, Never>] = []
        for _ in 0..<4 {
            let client = PostgresClient(configuration: configuration, eventLoopGroup: Self.group, backgroundLogger: Self.logger)
            clients.append(client)
            runs.append(Task { await client.run() })
        }
        defer { for r in runs { r.cancel() } }
        let stores = clients.map { PostgresHistoryStore(client: $0, timeout: .seconds(5), retention: nil, logger: Self.logger) }
        try await withThrowingTaskGroup(of: Int.self) { group in
            for store in stores { group.addTask { try await store.migrate() } }
            for try await version in group { #expect(version == PostgresHistoryStore.migrations.count) }
        }
        var rows: [Int64] = []
        for try await v in try await clients[0].query("SELECT version::bigint FROM smg_schema_migrations ORDER BY version").decode(Int64.self) { rows.append(v) }
        #expect(rows == Array(1...Int64(PostgresHistoryStore.migrations.count)), "each version recorded once: \(rows)")
        // A conversation written by one is read by another.
        let c = try await stores[1].createConversation(metadata: ["k": "v"], items: [], tenant: nil)
        #expect(try await stores[3].conversation(c.id)?.metadata == ["k": "v"])

        try await clients[0].query("INSERT INTO smg_schema_migrations (version) VALUES (99)")
        let later = PostgresHistoryStore(client: clients[2], timeout: .seconds(5), retention: nil, logger: Self.logger)
        await #expect(throws: HistoryStoreError.self) { try await later.migrate() }
        do {
            _ = try await later.conversation(c.id)
            Issue.record("a newer schema was read")
        } catch let error as HistoryStoreError {
            #expect(error.description.contains("upgrade smg"), "\(error.description)")
        }
    }

    /// PostgreSQL's retention, as Redis keeps it: past it a conversation (with its items) and a
    /// response are no longer read, written to or deleted (404), and the purge deletes their
    /// rows; a row without `expires_at` (retention -1, or written before retention existed and
    /// brought over by the migration) stays.
    @Test func expiredRowsAreNotReadAndThePurgeDeletesThem() async throws {
        let server = try await PostgresServer()
        let configuration = try RouterNode.postgresConfiguration(try PostgresURL(parsing: server.url), poolSize: 2, timeoutSecs: 5,
                                                                 tls: RouterConfig.load(arguments: [], environment: [:]).tls)
        let client = PostgresClient(configuration: configuration, eventLoopGroup: Self.group, backgroundLogger: Self.logger)
        let run = Task { await client.run() }
        defer { run.cancel() }
        // A database at the first schema version, with a row written then.
        for sql in PostgresHistoryStore.migrations[0] { try await client.query(PostgresQuery(unsafeSQL: sql)) }
        try await client.query("CREATE TABLE smg_schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        try await client.query("INSERT INTO smg_schema_migrations (version) VALUES (1)")
        try await client.query("INSERT INTO smg_conversations (id, created_at, metadata) VALUES ('conv_old', now(), '{}')")

        let store = PostgresHistoryStore(client: client, timeout: .seconds(5), retention: .seconds(2), logger: Self.logger)
        let forever = PostgresHistoryStore(client: client, timeout: .seconds(5), retention: nil, logger: Self.logger)
        #expect(try await store.migrate() == PostgresHistoryStore.migrations.count)
        let c = try await store.createConversation(metadata: [:], items: [Self.item("msg_a"), Self.item("msg_b", at: 1)], tenant: nil)
        let response = StoredResponse(id: "resp_x", previousResponseID: nil, conversationID: nil, input: [], createdAt: Date(), safetyIdentifier: nil,
                                      model: nil, raw: ["id": "resp_x"], tenant: nil)
        try await store.saveResponse(response, appendingTo: nil, items: [])
        let kept = StoredResponse(id: "resp_kept", previousResponseID: nil, conversationID: nil, input: [], createdAt: Date(), safetyIdentifier: nil,
                                  model: nil, raw: ["id": "resp_kept"], tenant: nil)
        try await forever.saveResponse(kept, appendingTo: nil, items: [])
        #expect(try await store.conversation(c.id) != nil)
        #expect(try await store.response("resp_x") != nil)

        try await eventually(timeout: .seconds(15), "the response expires") { try await store.response("resp_x") == nil }
        try await eventually(timeout: .seconds(5), "the conversation expires") { try await store.conversation(c.id) == nil }
        #expect(try await store.items(of: c.id, limit: 10, ascending: true, after: nil) == nil)
        #expect(try await store.item("msg_a", of: c.id) == nil)
        #expect(try await store.addItems([Self.item("msg_c")], to: c.id) == nil)
        #expect(try await store.updateConversation(c.id, metadata: ["k": "v"]) == nil)
        #expect(try await store.deleteConversation(c.id) == false)
        #expect(try await store.deleteResponse("resp_x") == false)
        #expect(try await store.response("resp_kept") != nil, "written without retention: kept")
        #expect(try await store.conversation("conv_old") != nil, "written before retention existed: kept")

        // The purge deletes the expired rows (in batches of one here), the items with their conversation.
        #expect(try await store.purgeExpired(batch: 1) == 2)
        func rows(_ table: String) async throws -> Int64 {
            var n: Int64 = 0
            for try await count in try await client.query(PostgresQuery(unsafeSQL: "SELECT count(*)::bigint FROM \(table)")).decode(Int64.self) { n = count }
            return n
        }
        #expect(try await rows("smg_conversation_items") == 0)
        #expect(try await rows("smg_conversations") == 1)
        #expect(try await rows("smg_responses") == 1)
        #expect(try await store.purgeExpired() == 0)
    }
}
