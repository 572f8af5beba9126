import Foundation

/// `--history-backend redis`: the reference gateway's schema, so either gateway reads the other's
/// data. `conversation:{id}` hash (`id`, `created_at` RFC 3339, `metadata` JSON);
/// `conversation:{id}:items` sorted set (item ids scored by the ms they were added); `item:{id}`
/// hash (`id`, `response_id`, `item_type`, `role`, `content` JSON, `status`, `created_at`);
/// `response:{id}` hash (`id`, `previous_response_id`, `conversation_id`, `input` JSON,
/// `created_at`, `safety_identifier`, `model`, `raw_response` JSON); `safety:{identifier}:responses`
/// sorted set of response ids scored by creation ms.
/// Retention (`--redis-retention-days`) is an EXPIRE set on the hashes when they are written.
/// Every multi-key write is one MULTI/EXEC: a crash never leaves an item without its index.
/// Every write is durable (`RedisClient.transaction(_:durable:)`: WAIT for the replicas
/// `--redis-wait-replicas` asks for) and may be written again: ids are fixed before the write
/// (a claimed item id is this conversation's on the second try too) and HSET and ZADD of the
/// same values change nothing, so a write deferred after a failover can simply be repeated.
final class RedisHistoryStore: HistoryStore {
    let redis: RedisClient
    /// Seconds, nil: kept forever.
    let retention: Int?

    init(redis: RedisClient, retentionDays: Int) {
        self.redis = redis
        retention = retentionDays < 0 ? nil : retentionDays * 86_400
    }

    private static func conversationKey(_ id: String) -> String { "conversation:\(id)" }
    private static func itemsKey(_ id: String) -> String { "conversation:\(id):items" }
    private static func itemKey(_ id: String) -> String { "item:\(id)" }
    private static func responseKey(_ id: String) -> String { "response:\(id)" }
    private static func safetyKey(_ identifier: String) -> String { "safety:\(identifier):responses" }

    /// RFC 3339 timestamps, as the reference gateway writes them.
    private static let rfc3339 = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
    private static func date(_ s: String?) -> Date {
        guard let s else { return Date(timeIntervalSince1970: 0) }
        return (try? rfc3339.parse(s)) ?? (try? Date.ISO8601FormatStyle().parse(s)) ?? Date(timeIntervalSince1970: 0)
    }

    /// Runs a Redis call, turning transport failures into `HistoryUnavailable`.
    private func call<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch RedisError.refused(let why) {
            throw HistoryStoreError(description: "Redis refused a write: \(why)")  // a 500: our bug, not an outage
        } catch let error as RedisError {
            throw HistoryUnavailable(description: error.description)
        }
    }

    private func expire(_ key: String) -> [[String]] { retention.map { [["EXPIRE", key, String($0)]] } ?? [] }

    /// Item hashes are keyed by item id alone (the reference's `item:{id}`), so an item id that
    /// came with the request must not name an item of another conversation: that item would be overwritten (and listed in two conversations). Each such id is claimed
    /// in one atomic step (`claimScript`): taken when no item has it yet, or when it is already
    /// this conversation's; otherwise the item is stored under a fresh id. Two requests that
    /// bring the same new id at the same moment cannot both take it: the first claim creates the
    /// item's hash, and the second then finds it neither free nor its own.
    private func claimingIDs(_ items: [ConversationItem], conversation: String) async throws -> [ConversationItem] {
        let given = items.indices.filter { items[$0].idFromClient }
        guard !given.isEmpty else { return items }
        let ttl = String(retention ?? 0)
        let replies = try await call {
            try await redis.batch(given.map { i in
                ["EVAL", Self.claimScript, "2", Self.itemKey(items[i].id), Self.itemsKey(conversation), items[i].id, ttl].map { Array($0.utf8) }
            })
        }
        var out = items
        for (k, i) in given.enumerated() where replies[k].int != 1 {
            out[i] = out[i].withFreshID()
        }
        return out
    }

    /// KEYS: the item's hash, the conversation's index; ARGV: the id, the retention in seconds
    /// (0: none). 1 when the id is this conversation's to write: a new hash (its `id` field set
    /// now, with the retention, so a write that never follows leaves nothing forever), or an
    /// item the conversation already lists.
    static let claimScript = """
        if redis.call('HSETNX', KEYS[1], 'id', ARGV[1]) == 1 then
          if ARGV[2] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
          return 1
        end
        if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 1 end
        return 0
        """

    private func writeItems(_ items: [ConversationItem], conversation: String) -> [[String]] {
        var commands: [[String]] = []
        for item in items {
            var fields = ["HSET", Self.itemKey(item.id), "id", item.id, "item_type", item.type, "content", item.content.render(),
                          "created_at", Self.rfc3339.format(item.createdAt)]
            if let r = item.responseID { fields += ["response_id", r] }
            if let r = item.role { fields += ["role", r] }
            if let s = item.status { fields += ["status", s] }
            commands.append(fields)
            commands += expire(Self.itemKey(item.id))
            commands.append(["ZADD", Self.itemsKey(conversation), String(Int(item.createdAt.timeIntervalSince1970 * 1000)), item.id])
        }
        if !items.isEmpty { commands += expire(Self.itemsKey(conversation)) }
        return commands
    }

    func createConversation(metadata: [String: String], items: [ConversationItem], tenant: String?) async throws -> Conversation {
        let c = Conversation(id: HistoryIDs.make("conv"), createdAt: Date(), metadata: metadata, tenant: tenant)
        var commands: [[String]] = [["HSET", Self.conversationKey(c.id), "id", c.id, "created_at", Self.rfc3339.format(c.createdAt),
                                     "metadata", JSONValue(metadata).render()] + (tenant.map { ["tenant_id", $0] } ?? [])]
        commands += expire(Self.conversationKey(c.id))
        commands += writeItems(try await claimingIDs(items, conversation: c.id), conversation: c.id)
        _ = try await call { try await redis.transaction(commands, durable: true) }
        return c
    }

    func conversation(_ id: String) async throws -> Conversation? {
        let fields = try await call { try await redis.send(["HGETALL", Self.conversationKey(id)], idempotent: true) }
        let map = Self.map(fields)
        guard !map.isEmpty else { return nil }
        let metadata = map["metadata"].flatMap { JSONValue.parse(Array($0.utf8))?.stringMap } ?? [:]
        return Conversation(id: map["id"] ?? id, createdAt: Self.date(map["created_at"]), metadata: metadata, tenant: map["tenant_id"])
    }

    func updateConversation(_ id: String, metadata: [String: String]) async throws -> Conversation? {
        guard var c = try await conversation(id) else { return nil }
        c.metadata = metadata
        _ = try await call { try await redis.transaction([["HSET", Self.conversationKey(id), "metadata", JSONValue(metadata).render()]], durable: true) }
        return c
    }

    /// The conversation, its index and every item it lists go together.
    func deleteConversation(_ id: String) async throws -> Bool {
        let items = try await call { try await redis.send(["ZRANGE", Self.itemsKey(id), "0", "-1"], idempotent: true) }.array?.compactMap(\.text) ?? []
        let replies = try await call {
            try await redis.transaction([["DEL", Self.conversationKey(id)], ["DEL", Self.itemsKey(id)]] + items.map { ["DEL", Self.itemKey($0)] }, durable: true)
        }
        return (replies.first?.int ?? 0) > 0
    }

    func addItems(_ items: [ConversationItem], to conversation: String) async throws -> [ConversationItem]? {
        guard try await call({ try await redis.send(["EXISTS", Self.conversationKey(conversation)], idempotent: true) }).int == 1 else { return nil }
        let stored = try await claimingIDs(items, conversation: conversation)
        _ = try await call { try await redis.transaction(writeItems(stored, conversation: conversation), durable: true) }
        return stored
    }

    func items(of conversation: String, limit: Int, ascending: Bool, after: String?) async throws -> (items: [ConversationItem], hasMore: Bool)? {
        guard try await call({ try await redis.send(["EXISTS", Self.conversationKey(conversation)], idempotent: true) }).int == 1 else { return nil }
        var start = 0
        if let after {
            // Ranks, not scores: items added in the same millisecond are neither skipped nor repeated.
            let rank = try await call { try await redis.send([ascending ? "ZRANK" : "ZREVRANK", Self.itemsKey(conversation), after], idempotent: true) }
            if let r = rank.int { start = r + 1 }
        }
        let ids = try await call {
            try await redis.send([ascending ? "ZRANGE" : "ZREVRANGE", Self.itemsKey(conversation), String(start), String(start + limit)], idempotent: true)
        }.array?.compactMap(\.text) ?? []
        let loaded = try await load(Array(ids.prefix(limit)))
        return (loaded, ids.count > limit)
    }

    func item(_ id: String, of conversation: String) async throws -> ConversationItem? {
        let score = try await call { try await redis.send(["ZSCORE", Self.itemsKey(conversation), id], idempotent: true) }
        guard score != .null else { return nil }
        return try await load([id]).first
    }

    /// Only an item the conversation lists is deleted: an id of another conversation's item
    /// is a 404 and that item stays.
    func deleteItem(_ id: String, of conversation: String) async throws -> Bool {
        guard try await call({ try await redis.send(["ZREM", Self.itemsKey(conversation), id]) }).int == 1 else { return false }
        _ = try await call { try await redis.transaction([["DEL", Self.itemKey(id)]], durable: true) }
        return true
    }

    func saveResponse(_ response: StoredResponse, appendingTo conversation: String?, items: [ConversationItem]) async throws {
        var fields = ["HSET", Self.responseKey(response.id), "id", response.id, "input", JSONValue.array(response.input.map(\.json)).render(),
                      "created_at", Self.rfc3339.format(response.createdAt), "raw_response", response.raw.render()]
        if let p = response.previousResponseID { fields += ["previous_response_id", p] }
        if let c = response.conversationID { fields += ["conversation_id", c] }
        if let s = response.safetyIdentifier { fields += ["safety_identifier", s] }
        if let m = response.model { fields += ["model", m] }
        if let t = response.tenant { fields += ["tenant_id", t] }
        var commands = [fields] + expire(Self.responseKey(response.id))
        if let s = response.safetyIdentifier {
            commands.append(["ZADD", Self.safetyKey(s), String(Int(response.createdAt.timeIntervalSince1970 * 1000)), response.id])
            commands += expire(Self.safetyKey(s))
        }
        if let conversation { commands += writeItems(try await claimingIDs(items, conversation: conversation), conversation: conversation) }
        _ = try await call { try await redis.transaction(commands, durable: true) }
    }

    func response(_ id: String) async throws -> StoredResponse? {
        let map = Self.map(try await call { try await redis.send(["HGETALL", Self.responseKey(id)], idempotent: true) })
        guard !map.isEmpty, let raw = map["raw_response"].flatMap({ JSONValue.parse(Array($0.utf8)) }) else { return nil }
        let createdAt = Self.date(map["created_at"])
        let input = (map["input"].flatMap { JSONValue.parse(Array($0.utf8)) }?.array ?? []).compactMap { try? ConversationItem.parse($0, now: createdAt) }
        return StoredResponse(id: map["id"] ?? id, previousResponseID: map["previous_response_id"], conversationID: map["conversation_id"],
                              input: input, createdAt: createdAt, safetyIdentifier: map["safety_identifier"], model: map["model"], raw: raw,
                              tenant: map["tenant_id"])
    }

    func deleteResponse(_ id: String) async throws -> Bool {
        let safety = try await call { try await redis.send(["HGET", Self.responseKey(id), "safety_identifier"], idempotent: true) }.text
        var commands = [["DEL", Self.responseKey(id)]]
        if let safety { commands.append(["ZREM", Self.safetyKey(safety), id]) }
        let replies = try await call { try await redis.transaction(commands, durable: true) }
        return (replies.first?.int ?? 0) > 0
    }

    /// The items' hashes, in the order given, in one round trip; expired ones are skipped.
    private func load(_ ids: [String]) async throws -> [ConversationItem] {
        guard !ids.isEmpty else { return [] }
        let replies = try await call { try await redis.batch(ids.map { [Array("HGETALL".utf8), Array(Self.itemKey($0).utf8)] }, idempotent: true) }
        return zip(ids, replies).compactMap { id, reply in
            let map = Self.map(reply)
            guard !map.isEmpty else { return nil }
            return ConversationItem(id: map["id"] ?? id, responseID: map["response_id"], type: map["item_type"] ?? "message", role: map["role"],
                                    content: map["content"].flatMap { JSONValue.parse(Array($0.utf8)) } ?? .null, status: map["status"],
                                    createdAt: Self.date(map["created_at"]))
        }
    }

    /// An HGETALL reply as a dictionary.
    private static func map(_ reply: RedisValue) -> [String: String] {
        guard let a = reply.array else { return [:] }
        var out: [String: String] = [:]
        var i = 0
        while i + 1 < a.count {
            if let k = a[i].text, let v = a[i + 1].text { out[k] = v }
            i += 2
        }
        return out
    }
}
