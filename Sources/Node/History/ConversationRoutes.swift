import Foundation
import NIOCore
import NIOHTTP1

/// The Conversations API (`/v1/conversations…`), in OpenAI's shapes, over the history store.
enum ConversationRoutes {
    enum Path: Equatable, Sendable {
        case create
        case conversation(String)
        case items(String)
        case item(String, String)
    }

    /// `/v1/conversations[/{id}[/items[/{item_id}]]]` → the path, nil for anything else under it.
    static func resolve(_ path: Substring) -> Path? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst(3)  // "", "v1", "conversations"
        switch parts.count {
        case 0: return .create
        case 1 where !parts[parts.startIndex].isEmpty: return .conversation(String(parts[parts.startIndex]))
        case 2 where parts.last == "items": return .items(String(parts[parts.startIndex]))
        case 3 where parts[parts.startIndex + 1] == "items": return .item(String(parts[parts.startIndex]), String(parts.last!))
        default: return nil
        }
    }

    static let maxItemsPerRequest = 20
    static let maxMetadataKeys = 16

    /// `tenant`: the caller's (`Tenancy`): another tenant's conversation is not found.
    /// `maxItemBytes`: `--history-max-item-bytes`.
    static func answer(_ path: Path, method: HTTPMethod, target: RequestTarget, body: ByteBuffer, store: any HistoryStore, tenant: String? = nil,
                       maxItemBytes: Int = .max, metrics: RouterMetrics? = nil) async -> Result<ControlResponse, APIError> {
        let started = ContinuousClock.now
        let result: Result<ControlResponse, APIError>
        do {
            result = .success(try await route(path, method: method, target: target, body: body, store: store, tenant: tenant, maxItemBytes: maxItemBytes))
        } catch {
            result = .failure(.history(error))
        }
        metrics?.historyOperation(operation(path, method), result: HistoryOutcome(result).label, seconds: (ContinuousClock.now - started).seconds)
        return result
    }

    /// A bounded metric label for the operation.
    static func operation(_ path: Path, _ method: HTTPMethod) -> String {
        switch (path, method) {
        case (.create, _): return "create_conversation"
        case (.conversation, .GET): return "get_conversation"
        case (.conversation, .DELETE): return "delete_conversation"
        case (.conversation, _): return "update_conversation"
        case (.items, .GET): return "list_items"
        case (.items, _): return "add_items"
        case (.item, .DELETE): return "delete_item"
        case (.item, _): return "get_item"
        }
    }

    private static func route(_ path: Path, method: HTTPMethod, target: RequestTarget, body: ByteBuffer, store: any HistoryStore,
                              tenant: String?, maxItemBytes: Int) async throws -> ControlResponse {
        let now = Date()
        // Every route under a conversation first finds it, as this caller may see it.
        switch path {
        case .conversation(let id), .items(let id), .item(let id, _):
            let conversation = try await existing(id, store, tenant: tenant)
            if case (.conversation, .GET) = (path, method) { return ControlResponse(json: conversation.json) }
        case .create: break
        }
        switch (path, method) {
        case (.create, .POST):
            let request = try object(body, allowEmpty: true)
            let metadata = try Self.metadata(request["metadata"])
            let items = try Self.items(request["items"], now: now, maxBytes: maxItemBytes)
            let c = try await store.createConversation(metadata: metadata, items: items, tenant: tenant)
            return ControlResponse(json: c.json)
        case (.conversation(let id), .POST):
            let request = try object(body, allowEmpty: false)
            guard let c = try await store.updateConversation(try HistoryIDs.checked(id), metadata: try Self.metadata(request["metadata"])) else { throw notFound(id) }
            return ControlResponse(json: c.json)
        case (.conversation(let id), .DELETE):
            guard try await store.deleteConversation(try HistoryIDs.checked(id)) else { throw notFound(id) }
            return ControlResponse(json: ["id": .string(id), "object": "conversation.deleted", "deleted": true])
        case (.items(let id), .GET):
            let query = try ListQuery(target)
            guard let page = try await store.items(of: try HistoryIDs.checked(id), limit: query.limit, ascending: query.ascending, after: query.after) else { throw notFound(id) }
            return ControlResponse(json: list(page.items, hasMore: page.hasMore))
        case (.items(let id), .POST):
            let request = try object(body, allowEmpty: false)
            let items = try Self.items(request["items"], now: now, maxBytes: maxItemBytes)
            guard !items.isEmpty else { throw APIError(.missingItems, "'items' must hold at least one item") }
            guard let added = try await store.addItems(items, to: try HistoryIDs.checked(id)) else { throw notFound(id) }
            return ControlResponse(json: list(added, hasMore: false))
        case (.item(let id, let itemID), .GET):
            guard let item = try await store.item(itemID, of: try HistoryIDs.checked(id)) else { throw itemNotFound(itemID) }
            return ControlResponse(json: item.json)
        case (.item(let id, let itemID), .DELETE):
            guard try await store.deleteItem(itemID, of: try HistoryIDs.checked(id)) else { throw itemNotFound(itemID) }
            return ControlResponse(json: try await existing(id, store, tenant: tenant).json)
        default:
            throw APIError.methodNotAllowed(method, String(target.path))
        }
    }

    /// OpenAI's `list` object of items.
    static func list(_ items: [ConversationItem], hasMore: Bool) -> JSONValue {
        ["object": "list", "data": .array(items.map(\.json)), "first_id": JSONValue(items.first?.id), "last_id": JSONValue(items.last?.id),
         "has_more": .bool(hasMore)]
    }

    private static func existing(_ id: String, _ store: any HistoryStore, tenant: String?) async throws -> Conversation {
        guard let c = try await store.conversation(try HistoryIDs.checked(id)), c.isVisible(to: tenant) else { throw notFound(id) }
        return c
    }

    private static func object(_ body: ByteBuffer, allowEmpty: Bool) throws(APIError) -> JSONValue {
        if body.readableBytes == 0, allowEmpty { return [:] }
        guard let v = JSONValue.parse(body.readableBytesView), v.object != nil else {
            throw APIError(.invalidJSON, "the body must be a JSON object")
        }
        return v
    }

    /// OpenAI's metadata limits, shared with the Responses API.
    static func metadata(_ value: JSONValue?) throws(APIError) -> [String: String] {
        guard let value, value != .null else { return [:] }
        guard let map = value.stringMap, map.count <= maxMetadataKeys,
              map.allSatisfy({ $0.key.utf8.count <= 64 && $0.value.utf8.count <= 512 }) else {
            throw APIError(.invalidMetadata, "metadata is at most 16 string keys (64 characters) with string values (512 characters)")
        }
        return map
    }

    private static func items(_ value: JSONValue?, now: Date, maxBytes: Int) throws(APIError) -> [ConversationItem] {
        guard let value, value != .null else { return [] }
        guard let array = value.array else { throw APIError(.invalidItems, "'items' must be an array") }
        guard array.count <= maxItemsPerRequest else { throw APIError(.tooManyItems, "at most \(maxItemsPerRequest) items per request") }
        let items = try ConversationItem.parseAll(array, now: now, field: "items", code: .invalidItem)
        try ConversationItem.checkSizes(items, field: "items", maxBytes: maxBytes)
        return items
    }

    private static func notFound(_ id: String) -> APIError {
        APIError(.conversationNotFound, "no conversation \(id.prefix(128))")
    }
    private static func itemNotFound(_ id: String) -> APIError {
        APIError(.itemNotFound, "no item \(id.prefix(128)) in this conversation")
    }
}

/// `?limit=&order=&after=` of OpenAI's list routes: `limit` 1 to 100 (20), `order` `asc` or
/// `desc` (`desc`), `after` an item id.
struct ListQuery {
    let limit: Int
    let ascending: Bool
    let after: String?

    init(_ target: RequestTarget) throws(APIError) {
        limit = try target.parameter("limit").map { s throws(APIError) -> Int in
            guard let n = Int(s), (1...100).contains(n) else { throw APIError(.invalidLimit, "limit must be 1 to 100") }
            return n
        } ?? 20
        let order = target.parameter("order") ?? "desc"
        guard order == "asc" || order == "desc" else { throw APIError(.invalidOrder, "order must be asc or desc") }
        ascending = order == "asc"
        after = target.parameter("after")
    }
}
