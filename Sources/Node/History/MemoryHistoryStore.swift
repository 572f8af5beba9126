import Foundation
import Synchronization

/// `--history-backend memory`: conversations in this router's memory (gone with the process,
/// not shared with other routers). Bounded: past `maxResponses` stored responses (or
/// `maxConversations` conversations) the oldest go, so a router that runs for months does not
/// grow without end; Redis, with its retention, is the store for keeping things.
final class MemoryHistoryStore: HistoryStore, ImmediateHistoryStore {
    static let maxResponses = 100_000
    static let maxConversations = 100_000
    private struct Stored {
        var conversation: Conversation
        var items: [ConversationItem]
    }
    private let conversations = Mutex<[String: Stored]>([:])
    /// Creation order of conversations, for the bound.
    private let conversationOrder = Mutex(Bounded<Bool>(limit: maxConversations))
    private let responses = Mutex(Bounded<StoredResponse>(limit: maxResponses))

    func saveResponse(_ response: StoredResponse, appendingTo conversation: String?, items: [ConversationItem]) async throws {
        saveResponseNow(response, appendingTo: conversation, items: items)
    }

    func saveResponseNow(_ response: StoredResponse, appendingTo conversation: String?, items: [ConversationItem]) {
        responses.withLock { $0.insert(response.id, response) }
        if let conversation { _ = addItemsNow(items, to: conversation) }
    }

    func response(_ id: String) async throws -> StoredResponse? { responses.withLock { $0.values[id] } }

    func deleteResponse(_ id: String) async throws -> Bool { responses.withLock { $0.values.removeValue(forKey: id) != nil } }

    func createConversation(metadata: [String: String], items: [ConversationItem]) async throws -> Conversation {
        let c = Conversation(id: HistoryIDs.make("conv"), createdAt: Date(), metadata: metadata)
        conversations.withLock { $0[c.id] = Stored(conversation: c, items: items) }
        let evicted = conversationOrder.withLock { $0.insert(c.id, true) }
        if !evicted.isEmpty { conversations.withLock { all in for id in evicted { all[id] = nil } } }
        return c
    }

    func conversation(_ id: String) async throws -> Conversation? { conversations.withLock { $0[id]?.conversation } }

    func updateConversation(_ id: String, metadata: [String: String]) async throws -> Conversation? {
        conversations.withLock { all in
            guard all[id] != nil else { return nil }
            all[id]!.conversation.metadata = metadata
            return all[id]!.conversation
        }
    }

    func deleteConversation(_ id: String) async throws -> Bool {
        conversationOrder.withLock { $0.values[id] = nil }
        return conversations.withLock { $0.removeValue(forKey: id) != nil }
    }

    func addItems(_ items: [ConversationItem], to conversation: String) async throws -> [ConversationItem]? {
        addItemsNow(items, to: conversation)
    }

    private func addItemsNow(_ items: [ConversationItem], to conversation: String) -> [ConversationItem]? {
        conversations.withLock { all in
            guard all[conversation] != nil else { return nil }
            all[conversation]!.items += items
            return items
        }
    }

    func items(of conversation: String, limit: Int, ascending: Bool, after: String?) async throws -> (items: [ConversationItem], hasMore: Bool)? {
        conversations.withLock { all in
            guard let stored = all[conversation] else { return nil }
            var list = ascending ? stored.items : stored.items.reversed()
            if let after, let i = list.firstIndex(where: { $0.id == after }) { list = Array(list[(i + 1)...]) }
            return (Array(list.prefix(limit)), list.count > limit)
        }
    }

    func item(_ id: String, of conversation: String) async throws -> ConversationItem? {
        conversations.withLock { $0[conversation]?.items.first { $0.id == id } }
    }

    func deleteItem(_ id: String, of conversation: String) async throws -> Bool {
        conversations.withLock { all in
            guard let i = all[conversation]?.items.firstIndex(where: { $0.id == id }) else { return false }
            all[conversation]!.items.remove(at: i)
            return true
        }
    }
}

/// `--history-backend none`: writes are accepted and forgotten, reads find nothing.
final class NoHistoryStore: HistoryStore, ImmediateHistoryStore {
    func saveResponseNow(_ response: StoredResponse, appendingTo conversation: String?, items: [ConversationItem]) {}
    func createConversation(metadata: [String: String], items: [ConversationItem]) async throws -> Conversation {
        Conversation(id: HistoryIDs.make("conv"), createdAt: Date(), metadata: metadata)
    }
    func conversation(_ id: String) async throws -> Conversation? { nil }
    func updateConversation(_ id: String, metadata: [String: String]) async throws -> Conversation? { nil }
    func deleteConversation(_ id: String) async throws -> Bool { false }
    func addItems(_ items: [ConversationItem], to conversation: String) async throws -> [ConversationItem]? { nil }
    func items(of conversation: String, limit: Int, ascending: Bool, after: String?) async throws -> (items: [ConversationItem], hasMore: Bool)? { nil }
    func item(_ id: String, of conversation: String) async throws -> ConversationItem? { nil }
    func deleteItem(_ id: String, of conversation: String) async throws -> Bool { false }
    func saveResponse(_ response: StoredResponse, appendingTo conversation: String?, items: [ConversationItem]) async throws {}
    func response(_ id: String) async throws -> StoredResponse? { nil }
    func deleteResponse(_ id: String) async throws -> Bool { false }
}

/// A dictionary that keeps at most `limit` entries, dropping the oldest inserted first.
struct Bounded<Value> {
    let limit: Int
    var values: [String: Value] = [:]
    private var order: [String] = []
    private var head = 0

    init(limit: Int) { self.limit = max(1, limit) }

    /// Inserts, and returns the keys that had to go.
    @discardableResult
    mutating func insert(_ key: String, _ value: Value) -> [String] {
        if values.updateValue(value, forKey: key) == nil { order.append(key) }
        var evicted: [String] = []
        while values.count > limit, head < order.count {
            let old = order[head]
            head += 1
            if values.removeValue(forKey: old) != nil { evicted.append(old) }
        }
        // Entries deleted by hand stay in `order` until reached; compact once half is dead.
        if head > 1024, head * 2 > order.count {
            order.removeFirst(head)
            head = 0
        }
        if order.count - head > limit * 2 {
            order = order[head...].filter { values[$0] != nil }
            head = 0
        }
        return evicted
    }
}
