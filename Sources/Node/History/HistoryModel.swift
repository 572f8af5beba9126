import Foundation

/// A conversation as the Conversations API shows it.
struct Conversation: Sendable, Equatable {
    let id: String
    let createdAt: Date
    /// Up to 16 string keys (OpenAI's limits); empty when none.
    var metadata: [String: String]
    /// The tenant that created it; nil: made without one, readable by every caller.
    var tenant: String? = nil

    var json: JSONValue {
        ["id": .string(id), "object": "conversation", "created_at": .int(Int(createdAt.timeIntervalSince1970)), "metadata": JSONValue(metadata)]
    }
}

/// One item of a conversation (a message, a function call, its output, reasoning), stored in
/// the reference gateway's fields: type, role, content (JSON), status, the response it came from.
struct ConversationItem: Sendable, Equatable {
    let id: String
    var responseID: String?
    var type: String
    var role: String?
    /// A message's content parts; for other types, the item's own fields.
    var content: JSONValue
    var status: String?
    var createdAt: Date
    /// The id came with the request (not made here): a store checks it names no item of
    /// another conversation before writing under it.
    var idFromClient = false

    /// The OpenAI item object.
    var json: JSONValue {
        var o: [String: JSONValue] = [:]
        if type != "message", case .object(let fields) = content { o = fields }
        o["id"] = .string(id)
        o["type"] = .string(type)
        if let status { o["status"] = .string(status) }
        if type == "message" {
            o["role"] = JSONValue(role)
            o["content"] = content
        }
        return .object(o)
    }

    /// An item from a request body, checked and normalized (a message's string content becomes
    /// one text part). Throws a message for the 400.
    static func parse(_ value: JSONValue, now: Date) throws(HistoryInputError) -> ConversationItem {
        guard case .object(var o) = value else { throw HistoryInputError("each item must be an object") }
        let type = o["type"]?.string ?? "message"
        guard ["message", "function_call", "function_call_output", "reasoning"].contains(type) else {
            throw HistoryInputError("item type '\(type)' is not supported; use message, function_call, function_call_output or reasoning")
        }
        let given = o["id"]?.string.flatMap { HistoryIDs.isValid($0) ? $0 : nil }
        let id = given ?? HistoryIDs.make(forItemType: type)
        if type == "message" {
            guard let role = o["role"]?.string, ["user", "assistant", "system", "developer"].contains(role) else {
                throw HistoryInputError("a message item needs a role: user, assistant, system or developer")
            }
            let content: JSONValue
            switch o["content"] {
            case .string(let text)?: content = [["type": .string(role == "assistant" ? "output_text" : "input_text"), "text": .string(text)]]
            case .array(let parts)?: content = .array(parts)
            default: throw HistoryInputError("a message item needs content: a string or an array of parts")
            }
            return ConversationItem(id: id, type: type, role: role, content: content, status: o["status"]?.string ?? "completed", createdAt: now,
                                    idFromClient: given != nil)
        }
        o["id"] = nil
        o["type"] = nil
        let status = o.removeValue(forKey: "status")?.string
        if type == "reasoning" {
            // Reasoning is never replayed to a worker, so its payload (summaries, encrypted
            // content, of any size) is not stored: only that it was there.
            return ConversationItem(id: id, type: type, role: nil, content: ["summary": []], status: status, createdAt: now, idFromClient: given != nil)
        }
        return ConversationItem(id: id, type: type, role: nil, content: .object(o), status: status, createdAt: now, idFromClient: given != nil)
    }
}

extension ConversationItem {
    /// The same item under a new id of its type, made here.
    func withFreshID() -> ConversationItem {
        ConversationItem(id: HistoryIDs.make(forItemType: type), responseID: responseID, type: type, role: role, content: content,
                         status: status, createdAt: createdAt)
    }

    /// Items from a request's array (`field` names it in errors, `code` is the 400's code).
    /// Items added together keep their order: each a millisecond after the one before.
    static func parseAll(_ list: [JSONValue], now: Date, field: String, code: APIError.Code) throws(APIError) -> [ConversationItem] {
        var out: [ConversationItem] = []
        out.reserveCapacity(list.count)
        for (i, raw) in list.enumerated() {
            do throws(HistoryInputError) {
                out.append(try parse(raw, now: now.addingTimeInterval(Double(i) / 1000)))
            } catch {
                throw APIError(code, "\(field)[\(i)]: \(error.message)")
            }
        }
        return out
    }
}

extension ConversationItem {
    /// What the item takes stored (its JSON, about): what the byte bounds count.
    var storedBytes: Int { content.byteEstimate + id.utf8.count + type.utf8.count + 96 }

    /// `--history-max-item-bytes`: the first item of `items` larger than `maxBytes` is a 400
    /// naming it, so the client learns which one and by how much.
    static func checkSizes(_ items: [ConversationItem], field: String, maxBytes: Int) throws(APIError) {
        guard let i = items.firstIndex(where: { $0.storedBytes > maxBytes }) else { return }
        throw APIError(.itemTooLarge, "\(field)[\(i)] takes \(items[i].storedBytes) bytes stored; an item holds at most \(maxBytes) (--history-max-item-bytes)")
    }
}

struct HistoryInputError: Error {
    let message: String
    init(_ m: String) { message = m }
}

/// A history operation the store refused for a reason that is not an outage: a 500.
struct HistoryStoreError: Error, CustomStringConvertible {
    let description: String
}

/// Why a history operation could not be done (Redis down or slow): a 503, never a crash.
struct HistoryUnavailable: Error, CustomStringConvertible {
    let description: String
}

/// Ids in OpenAI's style: a prefix and random hex (`conv_…`, `msg_…`, `resp_…`).
enum HistoryIDs {
    /// An item's id, prefixed by its type (`msg_…`, `rs_…`, `fc_…`).
    static func make(forItemType type: String) -> String {
        make(type == "message" ? "msg" : (type == "reasoning" ? "rs" : "fc"))
    }

    static func make(_ prefix: String) -> String {
        var g = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        var out = Array(prefix.utf8)
        out.reserveCapacity(out.count + 49)
        out.append(UInt8(ascii: "_"))
        for _ in 0..<3 {
            let word: UInt64 = g.next()
            for shift in stride(from: 60, through: 0, by: -4) { out.append(digits[Int((word >> UInt64(shift)) & 0xF)]) }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `id` when it is valid, else the 400 that says so.
    static func checked(_ id: String) throws(APIError) -> String {
        guard isValid(id) else { throw APIError(.invalidID, "'\(id.prefix(64))' is not a valid id") }
        return id
    }

    /// Ids a client may give: letters, digits, `_` and `-`, at most 128 characters (they become
    /// Redis keys and URL path segments).
    static func isValid(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 128 && id.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 122) || $0 == 95 || $0 == 45 }
    }
}


/// A response the gateway generated with `store: true`: what the Responses API serves back
/// (`GET /v1/responses/{id}`) and what a later turn's `previous_response_id` expands into.
struct StoredResponse: Sendable, Equatable {
    let id: String
    var previousResponseID: String?
    var conversationID: String?
    /// The turn's own input items (not the history it was given).
    var input: [ConversationItem]
    let createdAt: Date
    var safetyIdentifier: String?
    var model: String?
    /// The `response` object as the client received it.
    var raw: JSONValue
    /// The tenant that made it; nil: made without one, readable by every caller.
    var tenant: String? = nil

    /// The output items of `raw`, as items a later turn replays.
    var output: [ConversationItem] {
        (raw["output"]?.array ?? []).compactMap { try? ConversationItem.parse($0, now: createdAt) }
    }
}

/// Where conversations live (`--history-backend`).
protocol HistoryStore: Sendable {
    /// `tenant`: who owns it (`Tenancy`); nil for a conversation every caller may read.
    func createConversation(metadata: [String: String], items: [ConversationItem], tenant: String?) async throws -> Conversation
    func conversation(_ id: String) async throws -> Conversation?
    func updateConversation(_ id: String, metadata: [String: String]) async throws -> Conversation?
    func deleteConversation(_ id: String) async throws -> Bool
    /// nil when the conversation does not exist.
    func addItems(_ items: [ConversationItem], to conversation: String) async throws -> [ConversationItem]?
    /// Items in `order`, after the item `after` (exclusive), at most `limit`; nil when the
    /// conversation does not exist.
    func items(of conversation: String, limit: Int, ascending: Bool, after: String?) async throws -> (items: [ConversationItem], hasMore: Bool)?
    func item(_ id: String, of conversation: String) async throws -> ConversationItem?
    func deleteItem(_ id: String, of conversation: String) async throws -> Bool
    /// Stores a response; with `appendingTo`, its items join that conversation in the same write.
    func saveResponse(_ response: StoredResponse, appendingTo conversation: String?, items: [ConversationItem]) async throws
    func response(_ id: String) async throws -> StoredResponse?
    func deleteResponse(_ id: String) async throws -> Bool
}

/// A store that writes at once, in this process (`memory`, `none`): a Responses turn is stored
/// on the event loop that answers it, with no hop to a task and back (about 45 µs a turn,
/// measured in docs/benchmarks.md).
protocol ImmediateHistoryStore: HistoryStore {
    func saveResponseNow(_ response: StoredResponse, appendingTo conversation: String?, items: [ConversationItem])
}

extension HistoryStore {
    /// The chain ending at `id`, root first, at most `maxDepth` responses back; nil when `id`
    /// itself is unknown. A link that expired or was deleted ends the chain there.
    /// Loading also stops once the responses loaded hold `maxBytes` (a sum, not a count): a
    /// chain of large turns costs one request a bounded load, however long it is.
    /// `held`: responses this router answered but has not stored yet, read before the store.
    func responseChain(_ id: String, maxDepth: Int = 100, maxBytes: Int = .max, visibleTo tenant: String? = nil,
                       held: HeldTurns? = nil) async throws -> [StoredResponse]? {
        guard let last = try await response(id, held: held), last.isVisible(to: tenant) else { return nil }
        var chain = [last]
        var bytes = MemoryHistoryStore.bytes(of: last)
        var seen: Set<String> = [id]
        while chain.count < maxDepth, bytes < maxBytes, let previous = chain.last?.previousResponseID, seen.insert(previous).inserted,
              let r = try await response(previous, held: held), r.isVisible(to: tenant) {
            chain.append(r)
            bytes += MemoryHistoryStore.bytes(of: r)
        }
        return chain.reversed()
    }
}

/// A tenant sees its own records and untenanted ones (`Tenancy.visible`).
extension Conversation {
    func isVisible(to tenant: String?) -> Bool { Tenancy.visible(self.tenant, to: tenant) }
}

extension StoredResponse {
    func isVisible(to tenant: String?) -> Bool { Tenancy.visible(self.tenant, to: tenant) }
}
