import Foundation
import Synchronization

/// `--history-backend memory`: conversations and responses in this router's memory (gone with
/// the process, not shared with other routers). Bounded as the reference gateway bounds it
/// (`--history-memory-max-responses`, `--history-memory-max-items`,
/// `--history-memory-retention-secs`) and, beyond it, by bytes (`--history-memory-max-bytes`),
/// so no client can grow a router without end by storing large items: `HistoryLedger` decides
/// what goes, oldest first; Redis, with its retention, is the store for keeping things.
final class MemoryHistoryStore: HistoryStore, ImmediateHistoryStore {
    private struct Stored {
        var conversation: Conversation
        var items: [ConversationItem] = []

        /// Adds items; one whose id the conversation holds already replaces it (as Redis, keyed
        /// by id, does), so repeating an id cannot grow a conversation past what the ledger counts.
        mutating func add(_ new: [ConversationItem]) {
            for item in new {
                if let i = items.firstIndex(where: { $0.id == item.id }) { items[i] = item } else { items.append(item) }
            }
        }
    }
    private struct State {
        var conversations: [String: Stored] = [:]
        var responses: [String: StoredResponse] = [:]
        var ledger: HistoryLedger
    }
    private let state: Mutex<State>
    private let clock: @Sendable () -> UInt64
    /// Told what went and why, and the bytes held after (metrics).
    private let onEvict: @Sendable (_ evicted: [(HistoryLedger.Kind, HistoryLedger.Reason)], _ bytes: Int) -> Void

    init(limits: HistoryLedger.Limits = HistoryLedger.Limits(), clock: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970 * 1000) },
         onEvict: @escaping @Sendable ([(HistoryLedger.Kind, HistoryLedger.Reason)], Int) -> Void = { _, _ in }) {
        state = Mutex(State(ledger: HistoryLedger(limits: limits)))
        self.clock = clock
        self.onEvict = onEvict
    }

    /// What the store holds (tests, status).
    var counts: (responses: Int, items: Int, conversations: Int, bytes: Int) {
        state.withLock { s in (s.ledger.count(.responses), s.ledger.count(.items), s.ledger.count(.conversations), s.ledger.bytes) }
    }

    static func bytes(of item: ConversationItem) -> Int { item.storedBytes }
    static func bytes(of r: StoredResponse) -> Int { r.raw.byteEstimate + r.input.reduce(r.id.utf8.count + 128) { $0 + bytes(of: $1) } }
    static func bytes(of c: Conversation) -> Int { c.metadata.reduce(c.id.utf8.count + 64) { $0 + $1.key.utf8.count + $1.value.utf8.count + 8 } }

    /// Records `keys` in the ledger and applies what it says must go, under the lock.
    private func recording(_ s: inout State, _ records: [(HistoryLedger.Key, Int)]) -> [(HistoryLedger.Kind, HistoryLedger.Reason)] {
        let now = clock()
        var gone: [(HistoryLedger.Key, HistoryLedger.Reason)] = []
        for (key, size) in records { gone += s.ledger.record(key, bytes: size, nowMs: now) }
        for (key, _) in gone {
            switch key {
            case .response(let id): s.responses[id] = nil
            case .item(let conversation, let id):
                if let i = s.conversations[conversation]?.items.firstIndex(where: { $0.id == id }) { s.conversations[conversation]!.items.remove(at: i) }
            case .conversation(let id):
                for item in s.conversations.removeValue(forKey: id)?.items ?? [] { s.ledger.forget(.item(conversation: id, id: item.id)) }
            }
        }
        return gone.map { ($0.0.kind, $0.1) }
    }

    private func write<T>(_ body: (inout State) -> (T, [(HistoryLedger.Key, Int)])) -> T {
        let (result, evicted, bytes) = state.withLock { s in
            let (result, records) = body(&s)
            let evicted = recording(&s, records)
            return (result, evicted, s.ledger.bytes)
        }
        onEvict(evicted, bytes)
        return result
    }

    func saveResponse(_ response: StoredResponse, appendingTo conversation: String?, items: [ConversationItem]) async throws {
        saveResponseNow(response, appendingTo: conversation, items: items)
    }

    func saveResponseNow(_ response: StoredResponse, appendingTo conversation: String?, items: [ConversationItem]) {
        write { s in
            s.responses[response.id] = response
            var records: [(HistoryLedger.Key, Int)] = [(.response(response.id), Self.bytes(of: response))]
            if let conversation, s.conversations[conversation] != nil {
                s.conversations[conversation]!.add(items)
                records += items.map { (.item(conversation: conversation, id: $0.id), Self.bytes(of: $0)) }
            }
            return ((), records)
        }
    }

    func response(_ id: String) async throws -> StoredResponse? { state.withLock { $0.responses[id] } }

    func deleteResponse(_ id: String) async throws -> Bool {
        state.withLock { s in
            s.ledger.forget(.response(id))
            return s.responses.removeValue(forKey: id) != nil
        }
    }

    func createConversation(metadata: [String: String], items: [ConversationItem], tenant: String?) async throws -> Conversation {
        let c = Conversation(id: HistoryIDs.make("conv"), createdAt: Date(), metadata: metadata, tenant: tenant)
        return write { s in
            var stored = Stored(conversation: c)
            stored.add(items)
            s.conversations[c.id] = stored
            return (c, [(.conversation(c.id), Self.bytes(of: c))] + items.map { (.item(conversation: c.id, id: $0.id), Self.bytes(of: $0)) })
        }
    }

    /// A read keeps a conversation as long as a write would (retention counts from last use).
    private func used(_ id: String) {
        let now = clock()
        state.withLock { $0.ledger.touch(.conversation(id), nowMs: now) }
    }

    func conversation(_ id: String) async throws -> Conversation? {
        used(id)
        return state.withLock { $0.conversations[id]?.conversation }
    }

    func updateConversation(_ id: String, metadata: [String: String]) async throws -> Conversation? {
        write { s in
            guard s.conversations[id] != nil else { return (nil, []) }
            s.conversations[id]!.conversation.metadata = metadata
            let c = s.conversations[id]!.conversation
            return (c, [(.conversation(id), Self.bytes(of: c))])
        }
    }

    func deleteConversation(_ id: String) async throws -> Bool {
        state.withLock { s in
            guard let stored = s.conversations.removeValue(forKey: id) else { return false }
            s.ledger.forget(.conversation(id))
            for item in stored.items { s.ledger.forget(.item(conversation: id, id: item.id)) }
            return true
        }
    }

    func addItems(_ items: [ConversationItem], to conversation: String) async throws -> [ConversationItem]? {
        write { s in
            guard s.conversations[conversation] != nil else { return (nil, []) }
            s.conversations[conversation]!.add(items)
            return (items, [(.conversation(conversation), Self.bytes(of: s.conversations[conversation]!.conversation))]
                + items.map { (.item(conversation: conversation, id: $0.id), Self.bytes(of: $0)) })
        }
    }

    func items(of conversation: String, limit: Int, ascending: Bool, after: String?) async throws -> (items: [ConversationItem], hasMore: Bool)? {
        used(conversation)
        return state.withLock { s in
            guard let stored = s.conversations[conversation] else { return nil }
            var list = ascending ? stored.items : stored.items.reversed()
            if let after, let i = list.firstIndex(where: { $0.id == after }) { list = Array(list[(i + 1)...]) }
            return (Array(list.prefix(limit)), list.count > limit)
        }
    }

    func item(_ id: String, of conversation: String) async throws -> ConversationItem? {
        state.withLock { $0.conversations[conversation]?.items.first { $0.id == id } }
    }

    func deleteItem(_ id: String, of conversation: String) async throws -> Bool {
        state.withLock { s in
            guard let i = s.conversations[conversation]?.items.firstIndex(where: { $0.id == id }) else { return false }
            s.conversations[conversation]!.items.remove(at: i)
            s.ledger.forget(.item(conversation: conversation, id: id))
            return true
        }
    }
}

/// `--history-backend none`: writes are accepted and forgotten, reads find nothing.
final class NoHistoryStore: HistoryStore, ImmediateHistoryStore {
    func saveResponseNow(_ response: StoredResponse, appendingTo conversation: String?, items: [ConversationItem]) {}
    func createConversation(metadata: [String: String], items: [ConversationItem], tenant: String?) async throws -> Conversation {
        Conversation(id: HistoryIDs.make("conv"), createdAt: Date(), metadata: metadata, tenant: tenant)
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
