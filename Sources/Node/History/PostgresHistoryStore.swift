import Foundation
import Logging
import PostgresNIO
import Synchronization

/// `--history-backend postgres`: conversations, their items and stored responses in PostgreSQL
/// (`--postgres-db-url`, a pool of `--postgres-pool-max-size` connections by postgres-nio, each
/// call bounded by `--postgres-op-timeout-secs`). The same semantics as the Redis store: item ids
/// given by a client never take another conversation's item, a write can be repeated (every
/// insert is an upsert on ids fixed before the write), a conversation goes with its items, and
/// tenants are kept with what they own.
///
/// Retention (`--postgres-retention-days`) as Redis keeps it: a conversation expires that long
/// after it was created, a response that long after it was stored (`expires_at`, the database's
/// clock). An expired row is no longer read, and `purgeExpired` (every router, every ten
/// minutes) deletes expired rows in batches; rows written before retention existed, or with
/// `-1`, have no `expires_at` and stay.
///
/// The schema is created, or brought up to date, before the first call that needs it (and again
/// after a call found the database down): the steps of `migrations` in one transaction under an
/// advisory lock, so routers starting together apply each step once; `smg_schema_migrations`
/// records the version. A database newer than this smg (a later version applied) is refused
/// rather than written with the wrong shape.
final class PostgresHistoryStore: HistoryStore {
    let client: PostgresClient
    let timeout: Duration
    /// How long a conversation or a response is kept; nil keeps it until deleted.
    let retention: Duration?
    private let logger: Logger
    /// A purge is running (the periodic task does not start a second one beside it).
    private let purging = Mutex(false)
    /// The schema's migration, once it has succeeded; a failed one is tried again on the next call.
    private let schema = Mutex<Task<Void, any Error>?>(nil)

    init(client: PostgresClient, timeout: Duration, retention: Duration?, logger: Logger) {
        self.client = client
        self.timeout = timeout
        self.retention = retention
        self.logger = logger
    }

    /// Each entry one version: the statements that bring the schema from the one before to it.
    /// Never edit a shipped entry; add the next one.
    static let migrations: [[String]] = [
        [
            """
            CREATE TABLE IF NOT EXISTS smg_conversations (
              id text PRIMARY KEY, created_at timestamptz NOT NULL, metadata text NOT NULL, tenant text)
            """,
            """
            CREATE TABLE IF NOT EXISTS smg_conversation_items (
              id text PRIMARY KEY, conversation_id text NOT NULL, position bigint NOT NULL, response_id text,
              item_type text NOT NULL, role text, content text NOT NULL, status text, created_at timestamptz NOT NULL)
            """,
            "CREATE INDEX IF NOT EXISTS smg_conversation_items_order ON smg_conversation_items (conversation_id, position, id)",
            """
            CREATE TABLE IF NOT EXISTS smg_responses (
              id text PRIMARY KEY, previous_response_id text, conversation_id text, input text NOT NULL,
              created_at timestamptz NOT NULL, safety_identifier text, model text, raw_response text NOT NULL, tenant text)
            """,
            "CREATE INDEX IF NOT EXISTS smg_responses_safety ON smg_responses (safety_identifier, created_at) WHERE safety_identifier IS NOT NULL",
        ],
        [
            // Retention: when a row stops being read and may be purged (NULL: never).
            "ALTER TABLE smg_conversations ADD COLUMN IF NOT EXISTS expires_at timestamptz",
            "ALTER TABLE smg_responses ADD COLUMN IF NOT EXISTS expires_at timestamptz",
            "CREATE INDEX IF NOT EXISTS smg_conversations_expiry ON smg_conversations (expires_at) WHERE expires_at IS NOT NULL",
            "CREATE INDEX IF NOT EXISTS smg_responses_expiry ON smg_responses (expires_at) WHERE expires_at IS NOT NULL",
        ],
    ]

    /// The condition a row must meet to be read: not expired.
    private static let live = "(expires_at IS NULL OR expires_at > now())"

    /// The retention in seconds, a query parameter: NULL makes `now() + make_interval(…)` NULL.
    private var retentionSecs: Double? { retention.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 } }

    /// Deletes expired conversations (with their items) and responses, at most `batch` rows per
    /// statement, until none is left; the number of rows deleted. Several routers purging at
    /// once only share the work.
    @discardableResult
    func purgeExpired(batch: Int = 1000) async throws -> Int {
        var total = 0
        for statement: PostgresQuery in [
            """
            WITH gone AS (DELETE FROM smg_conversations WHERE id IN
              (SELECT id FROM smg_conversations WHERE expires_at <= now() LIMIT \(batch)) RETURNING id),
            items AS (DELETE FROM smg_conversation_items WHERE conversation_id IN (SELECT id FROM gone) RETURNING 1)
            SELECT id FROM gone
            """,
            "DELETE FROM smg_responses WHERE id IN (SELECT id FROM smg_responses WHERE expires_at <= now() LIMIT \(batch)) RETURNING id",
        ] {
            while true {
                let deleted = try await call { [self] in try await Self.count(client.query(statement, logger: logger)) }
                total += deleted
                if deleted < batch { break }
            }
        }
        return total
    }

    /// `purgeExpired` from the periodic task: skipped while one runs; a failure is logged once
    /// per purge (the database may be down: the next purge catches up).
    func purgeInBackground() {
        guard retention != nil, purging.withLock({ running in defer { running = true }; return !running }) else { return }
        Task { [self] in
            defer { purging.withLock { $0 = false } }
            do {
                let deleted = try await purgeExpired()
                if deleted > 0 { logger.info("expired history purged", metadata: ["rows": "\(deleted)"]) }
            } catch {
                logger.warning("expired history not purged", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The advisory lock migrations take (any fixed number; "smg-hist").
    static let migrationLock: Int64 = 0x736D_672D_6869_7374

    /// Applies the migrations this database lacks; the version it ends at.
    @discardableResult
    func migrate() async throws -> Int {
        do {
            return try await migrateInOneTransaction()
        } catch {
            throw Self.translate(error)
        }
    }

    private func migrateInOneTransaction() async throws -> Int {
        try await client.withTransaction(logger: logger) { c in
            try await c.query("SELECT pg_advisory_xact_lock(\(Self.migrationLock))", logger: logger)
            try await c.query("CREATE TABLE IF NOT EXISTS smg_schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                              logger: logger)
            var current: Int64 = 0
            for try await version in try await c.query("SELECT COALESCE(MAX(version), 0)::bigint FROM smg_schema_migrations", logger: logger).decode(Int64.self) {
                current = version
            }
            guard current <= Int64(Self.migrations.count) else {
                throw HistoryStoreError(description: "the database's history schema is version \(current); this smg knows up to \(Self.migrations.count): upgrade smg")
            }
            for (index, steps) in Self.migrations.enumerated() where Int64(index + 1) > current {
                for sql in steps { try await c.query(PostgresQuery(unsafeSQL: sql), logger: logger) }
                try await c.query("INSERT INTO smg_schema_migrations (version) VALUES (\(index + 1))", logger: logger)
            }
            return Self.migrations.count
        }
    }

    private func schemaReady() async throws {
        let task: Task<Void, any Error> = schema.withLock { running in
            if let running { return running }
            // Bounded like any call, so a database that never answers cannot hold the callers
            // that wait on this (awaiting a task's value does not end when the waiter is cancelled).
            let fresh = Task { [self] in
                let version = try await bounded { [self] in try await migrate() }
                logger.info("PostgreSQL history schema ready", metadata: ["version": "\(version)"])
            }
            running = fresh
            return fresh
        }
        do {
            try await task.value
        } catch {
            schema.withLock { if $0 == task { $0 = nil } }
            throw error
        }
    }

    /// One call to the database, bounded by the timeout: a database that is down, slow or gone
    /// is `HistoryUnavailable` (503, or a deferred turn); a statement it refuses is our bug (500).
    private func call<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        try await bounded { [self] in
            try await schemaReady()
            return try await operation()
        }
    }

    /// `operation`, cancelled at the timeout (postgres-nio's connection lease and queries end
    /// when cancelled), with errors translated.
    private func bounded<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        let timeout = self.timeout
        do {
            return try await withThrowingTaskGroup(of: T.self) { group in
                group.addTask { try await operation() }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    throw HistoryUnavailable(description: "PostgreSQL did not answer within --postgres-op-timeout-secs (\(timeout))")
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
        } catch let error as HistoryUnavailable {
            throw error
        } catch let error as HistoryStoreError {
            throw error
        } catch {
            throw Self.translate(error)
        }
    }

    static func translate(_ error: any Error) -> any Error {
        if let t = error as? PostgresTransactionError, let inner = t.closureError ?? t.beginError ?? t.commitError { return translate(inner) }
        if let e = error as? HistoryStoreError { return e }
        if let e = error as? PSQLError {
            if e.code == .server {
                let message = e.serverInfo?[.message] ?? "?"
                let state = e.serverInfo?[.sqlState] ?? "?"
                // Class 08 (connection), 53 (resources), 57 (operator intervention: shutting down,
                // restarting): the database is unavailable, not refusing what we sent.
                if state.hasPrefix("08") || state.hasPrefix("53") || state.hasPrefix("57") {
                    return HistoryUnavailable(description: "PostgreSQL: \(message) (\(state))")
                }
                return HistoryStoreError(description: "PostgreSQL refused a statement: \(message) (\(state))")
            }
            return HistoryUnavailable(description: "PostgreSQL unavailable: \(e.code)")
        }
        return HistoryUnavailable(description: "PostgreSQL unavailable: \(String(describing: error).prefix(200))")
    }

    // MARK: conversations

    func createConversation(metadata: [String: String], items: [ConversationItem], tenant: String?) async throws -> Conversation {
        let c = Conversation(id: HistoryIDs.make("conv"), createdAt: Date(), metadata: metadata, tenant: tenant)
        let meta = JSONValue(metadata).render()
        _ = try await call { [self] in
            try await client.withTransaction(logger: logger) { db in
                try await db.query("""
                    INSERT INTO smg_conversations (id, created_at, metadata, tenant, expires_at)
                    VALUES (\(c.id), \(c.createdAt), \(meta), \(tenant), now() + make_interval(secs => \(retentionSecs)))
                    """, logger: logger)
                return try await Self.write(items, conversation: c.id, on: db, logger: logger)
            }
        }
        return c
    }

    func conversation(_ id: String) async throws -> Conversation? {
        try await call { [self] in
            let rows = try await client.query("SELECT created_at, metadata, tenant FROM smg_conversations WHERE id = \(id) AND \(unescaped: Self.live)",
                                              logger: logger)
            for try await (createdAt, metadata, tenant) in rows.decode((Date, String, String?).self) {
                return Conversation(id: id, createdAt: createdAt, metadata: JSONValue.parse(Array(metadata.utf8))?.stringMap ?? [:], tenant: tenant)
            }
            return nil
        }
    }

    func updateConversation(_ id: String, metadata: [String: String]) async throws -> Conversation? {
        let meta = JSONValue(metadata).render()
        return try await call { [self] in
            let rows = try await client.query(
                "UPDATE smg_conversations SET metadata = \(meta) WHERE id = \(id) AND \(unescaped: Self.live) RETURNING created_at, tenant", logger: logger)
            for try await (createdAt, tenant) in rows.decode((Date, String?).self) {
                return Conversation(id: id, createdAt: createdAt, metadata: metadata, tenant: tenant)
            }
            return nil
        }
    }

    /// The conversation and every item it lists go together.
    func deleteConversation(_ id: String) async throws -> Bool {
        try await call { [self] in
            try await client.withTransaction(logger: logger) { db in
                try await db.query("DELETE FROM smg_conversation_items WHERE conversation_id = \(id)", logger: logger)
                // An expired conversation is gone already (404), its rows left to the purge.
                return try await Self.count(db.query("DELETE FROM smg_conversations WHERE id = \(id) AND \(unescaped: Self.live) RETURNING id",
                                                     logger: logger)) > 0
            }
        }
    }

    func addItems(_ items: [ConversationItem], to conversation: String) async throws -> [ConversationItem]? {
        try await call { [self] in
            try await client.withTransaction(logger: logger) { db -> [ConversationItem]? in
                // Locks the conversation's row: a delete cannot slip between the check and the write.
                guard try await Self.count(db.query("SELECT id FROM smg_conversations WHERE id = \(conversation) AND \(unescaped: Self.live) FOR SHARE",
                                                    logger: logger)) > 0 else {
                    return nil
                }
                return try await Self.write(items, conversation: conversation, on: db, logger: logger)
            }
        }
    }

    func items(of conversation: String, limit: Int, ascending: Bool, after: String?) async throws -> (items: [ConversationItem], hasMore: Bool)? {
        try await call { [self] in
            guard try await Self.count(client.query("SELECT id FROM smg_conversations WHERE id = \(conversation) AND \(unescaped: Self.live)",
                                                    logger: logger)) > 0 else { return nil }
            // The page starts after `after` when the conversation lists it (else at the start),
            // by (position, id): items added in the same millisecond are neither skipped nor repeated.
            let fetch = limit + 1
            var from: (position: Int64, id: String)?
            if let after {
                for try await (position, id) in try await client.query(
                    "SELECT position, id FROM smg_conversation_items WHERE id = \(after) AND conversation_id = \(conversation)", logger: logger
                ).decode((Int64, String).self) {
                    from = (position, id)
                }
            }
            let rows: PostgresRowSequence
            switch (ascending, from) {
            case (true, let from?):
                rows = try await client.query("""
                    SELECT \(unescaped: Self.itemColumns) FROM smg_conversation_items i WHERE conversation_id = \(conversation)
                    AND (position, id) > (\(from.position), \(from.id)) ORDER BY position, id LIMIT \(fetch)
                    """, logger: logger)
            case (false, let from?):
                rows = try await client.query("""
                    SELECT \(unescaped: Self.itemColumns) FROM smg_conversation_items i WHERE conversation_id = \(conversation)
                    AND (position, id) < (\(from.position), \(from.id)) ORDER BY position DESC, id DESC LIMIT \(fetch)
                    """, logger: logger)
            case (true, nil):
                rows = try await client.query(
                    "SELECT \(unescaped: Self.itemColumns) FROM smg_conversation_items i WHERE conversation_id = \(conversation) ORDER BY position, id LIMIT \(fetch)",
                    logger: logger)
            case (false, nil):
                rows = try await client.query(
                    "SELECT \(unescaped: Self.itemColumns) FROM smg_conversation_items i WHERE conversation_id = \(conversation) ORDER BY position DESC, id DESC LIMIT \(fetch)",
                    logger: logger)
            }
            let items = try await Self.decodeItems(rows)
            return (Array(items.prefix(limit)), items.count > limit)
        }
    }

    func item(_ id: String, of conversation: String) async throws -> ConversationItem? {
        try await call { [self] in
            try await Self.decodeItems(client.query(
                """
                SELECT \(unescaped: Self.itemColumns) FROM smg_conversation_items i WHERE id = \(id) AND conversation_id = \(conversation)
                AND EXISTS (SELECT 1 FROM smg_conversations WHERE id = \(conversation) AND \(unescaped: Self.live))
                """, logger: logger)).first
        }
    }

    /// Only an item the conversation lists is deleted: another conversation's is a 404 and stays.
    func deleteItem(_ id: String, of conversation: String) async throws -> Bool {
        try await call { [self] in
            try await Self.count(client.query("DELETE FROM smg_conversation_items WHERE id = \(id) AND conversation_id = \(conversation) RETURNING id",
                                              logger: logger)) > 0
        }
    }

    // MARK: responses

    func saveResponse(_ response: StoredResponse, appendingTo conversation: String?, items: [ConversationItem]) async throws {
        let input = JSONValue.array(response.input.map(\.json)).render()
        let raw = response.raw.render()
        let r = response
        let upsert: PostgresQuery = """
            INSERT INTO smg_responses (id, previous_response_id, conversation_id, input, created_at, safety_identifier, model, raw_response, tenant,
              expires_at)
            VALUES (\(r.id), \(r.previousResponseID), \(r.conversationID), \(input), \(r.createdAt), \(r.safetyIdentifier), \(r.model), \(raw), \(r.tenant),
              now() + make_interval(secs => \(retentionSecs)))
            ON CONFLICT (id) DO UPDATE SET previous_response_id = EXCLUDED.previous_response_id, conversation_id = EXCLUDED.conversation_id,
              input = EXCLUDED.input, created_at = EXCLUDED.created_at, safety_identifier = EXCLUDED.safety_identifier,
              model = EXCLUDED.model, raw_response = EXCLUDED.raw_response, tenant = EXCLUDED.tenant, expires_at = EXCLUDED.expires_at
            """
        guard let conversation, !items.isEmpty else {
            // One statement is its own transaction: no BEGIN and COMMIT round trips.
            _ = try await call { [self] in try await client.query(upsert, logger: logger) }
            return
        }
        _ = try await call { [self] in
            try await client.withTransaction(logger: logger) { db in
                try await db.query(upsert, logger: logger)
                _ = try await Self.write(items, conversation: conversation, on: db, logger: logger)
                return true
            }
        }
    }

    func response(_ id: String) async throws -> StoredResponse? {
        try await call { [self] in
            let rows = try await client.query("""
                SELECT previous_response_id, conversation_id, input, created_at, safety_identifier, model, raw_response, tenant
                FROM smg_responses WHERE id = \(id) AND \(unescaped: Self.live)
                """, logger: logger)
            for try await (previous, conversation, input, createdAt, safety, model, raw, tenant)
                in rows.decode((String?, String?, String, Date, String?, String?, String, String?).self) {
                guard let rawJSON = JSONValue.parse(Array(raw.utf8)) else { return nil }
                let items = (JSONValue.parse(Array(input.utf8))?.array ?? []).compactMap { try? ConversationItem.parse($0, now: createdAt) }
                return StoredResponse(id: id, previousResponseID: previous, conversationID: conversation, input: items, createdAt: createdAt,
                                      safetyIdentifier: safety, model: model, raw: rawJSON, tenant: tenant)
            }
            return nil
        }
    }

    func deleteResponse(_ id: String) async throws -> Bool {
        try await call { [self] in
            try await Self.count(client.query("DELETE FROM smg_responses WHERE id = \(id) AND \(unescaped: Self.live) RETURNING id", logger: logger)) > 0
        }
    }

    // MARK: items

    private static let itemColumns = "i.id, i.response_id, i.item_type, i.role, i.content, i.status, i.created_at"

    private static func decodeItems(_ rows: PostgresRowSequence) async throws -> [ConversationItem] {
        var items: [ConversationItem] = []
        for try await (id, responseID, type, role, content, status, createdAt) in rows.decode((String, String?, String, String?, String, String?, Date).self) {
            items.append(ConversationItem(id: id, responseID: responseID, type: type, role: role, content: JSONValue.parse(Array(content.utf8)) ?? .null,
                                          status: status, createdAt: createdAt))
        }
        return items
    }

    /// Writes `items` into `conversation`; returns them as stored. An id a client gave that
    /// names another conversation's item is not taken: that item is stored under a fresh id.
    private static func write(_ items: [ConversationItem], conversation: String, on db: PostgresConnection, logger: Logger) async throws -> [ConversationItem] {
        var stored: [ConversationItem] = []
        for var item in items {
            while true {
                let position = Int64(item.createdAt.timeIntervalSince1970 * 1000)
                let content = item.content.render()
                let taken = try await count(db.query("""
                    INSERT INTO smg_conversation_items (id, conversation_id, position, response_id, item_type, role, content, status, created_at)
                    VALUES (\(item.id), \(conversation), \(position), \(item.responseID), \(item.type), \(item.role), \(content), \(item.status), \(item.createdAt))
                    ON CONFLICT (id) DO UPDATE SET response_id = EXCLUDED.response_id, item_type = EXCLUDED.item_type, role = EXCLUDED.role,
                      content = EXCLUDED.content, status = EXCLUDED.status
                    WHERE smg_conversation_items.conversation_id = EXCLUDED.conversation_id
                    RETURNING id
                    """, logger: logger))
                if taken > 0 { break }
                item = item.withFreshID()
            }
            stored.append(item)
        }
        return stored
    }

    private static func count(_ rows: PostgresRowSequence) async throws -> Int {
        var n = 0
        for try await _ in rows { n += 1 }
        return n
    }
}
