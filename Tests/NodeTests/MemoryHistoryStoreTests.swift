import Foundation
import Synchronization
import Testing
@testable import Node

/// The memory history store's bounds: counts per kind (the reference's flags), one byte bound
/// over all, retention from last use; what goes is the oldest, and nothing it held is left
/// half-gone (an item leaves its conversation, a conversation takes its items).
@Suite struct MemoryHistoryStoreTests {
    typealias Key = HistoryLedger.Key

    @Test func theLedgerLetsTheOldestOfAKindGoAndDeletionsDoNotCount() {
        var l = HistoryLedger(limits: .init(responses: 3, items: 2, conversations: 2, bytes: 1 << 30, retentionMs: 0))
        for i in 0..<3 { #expect(l.record(.response("r\(i)"), bytes: 10, nowMs: 1).isEmpty) }
        #expect(l.record(.response("r3"), bytes: 10, nowMs: 1).map(\.0) == [.response("r0")])
        l.forget(.response("r1"))
        #expect(l.record(.response("r4"), bytes: 10, nowMs: 1).isEmpty, "r1 was deleted: r2, r3, r4 fit")
        #expect(l.record(.response("r2"), bytes: 10, nowMs: 1).isEmpty, "stored again, not added")
        #expect(l.record(.response("r5"), bytes: 10, nowMs: 1).map(\.0) == [.response("r3")], "r2 was renewed: r3 is now the oldest")
        // Items are counted on their own.
        #expect(l.record(.item(conversation: "c", id: "i0"), bytes: 1, nowMs: 1).isEmpty)
        #expect(l.record(.item(conversation: "c", id: "i1"), bytes: 1, nowMs: 1).isEmpty)
        #expect(l.record(.item(conversation: "c", id: "i2"), bytes: 1, nowMs: 1).map(\.0) == [.item(conversation: "c", id: "i0")])
        #expect(l.count(.responses) == 3 && l.count(.items) == 2 && l.bytes == 32)
        // Many touches of one record leave it one record.
        for t in 0..<10_000 { l.touch(.response("r5"), nowMs: UInt64(t)) }
        #expect(l.count(.responses) == 3 && l.bytes == 32)
    }

    @Test func theByteBoundTakesTheOldestOfAllAndRetentionCountsFromLastUse() {
        var l = HistoryLedger(limits: .init(responses: 100, items: 100, conversations: 100, bytes: 100, retentionMs: 1_000))
        #expect(l.record(.conversation("c"), bytes: 10, nowMs: 0).isEmpty)
        #expect(l.record(.response("r"), bytes: 40, nowMs: 100).isEmpty)
        #expect(l.record(.item(conversation: "c", id: "i"), bytes: 40, nowMs: 200).isEmpty)
        let over = l.record(.response("big"), bytes: 15, nowMs: 300)
        #expect(over.map(\.0) == [.conversation("c")] && over.allSatisfy { $0.1 == .bytes }, "the oldest of all: \(over)")
        l.touch(.item(conversation: "c", id: "i"), nowMs: 900)
        let expired = l.evictions(nowMs: 1_250)
        #expect(expired.map(\.0) == [.response("r")] && expired.allSatisfy { $0.1 == .retention }, "r is 1,150 ms old, big 950, i used 350 ago: \(expired)")
        #expect(l.record(.response("alone"), bytes: 500, nowMs: 1_300).map(\.0).contains(.response("alone")), "a record over the whole bound goes at once")
    }

    static func item(_ id: String, bytes: Int = 10) -> ConversationItem {
        ConversationItem(id: id, type: "message", role: "user", content: .array([.object(["type": "input_text", "text": .string(String(repeating: "x", count: bytes))])]),
                         createdAt: Date())
    }

    @Test func itemsLeaveTheirConversationAndAConversationTakesItsItems() async throws {
        let evictions = Mutex<[String]>([])
        let store = MemoryHistoryStore(limits: .init(responses: 10, items: 3, conversations: 2, bytes: 1 << 30, retentionMs: 0),
                                       onEvict: { gone, _ in evictions.withLock { $0 += gone.map { "\($0.0)/\($0.1.rawValue)" } } })
        let a = try await store.createConversation(metadata: [:], items: [Self.item("a0"), Self.item("a1")], tenant: nil)
        _ = try await store.addItems([Self.item("a2"), Self.item("a3")], to: a.id)
        let listed = try #require(try await store.items(of: a.id, limit: 10, ascending: true, after: nil))
        #expect(listed.items.map(\.id) == ["a1", "a2", "a3"], "the oldest item left the conversation")
        let b = try await store.createConversation(metadata: [:], items: [Self.item("b0")], tenant: nil)
        _ = try await store.conversation(a.id)  // a used: b is now the least recently used
        _ = try await store.createConversation(metadata: [:], items: [], tenant: nil)
        #expect(try await store.conversation(b.id) == nil && store.counts.conversations == 2)
        #expect(try await store.conversation(a.id) != nil)
        #expect(store.counts.items == 2, "b took its item; a lost one more to the item bound: \(store.counts)")
        #expect(evictions.withLock { $0 }.contains("items/count") && evictions.withLock { $0 }.contains("conversations/count"))
    }

    @Test func largeRecordsAreBoundedByBytesAndExpireWithTime() async throws {
        let now = Mutex<UInt64>(1_000_000)
        let store = MemoryHistoryStore(limits: .init(responses: 10_000, items: 100_000, conversations: 1_000, bytes: 1 << 20, retentionMs: 60_000),
                                       clock: { now.withLock { $0 } })
        for i in 0..<100 {
            let r = StoredResponse(id: "resp_\(i)", input: [Self.item("in\(i)", bytes: 64 << 10)], createdAt: Date(), raw: .null)
            try await store.saveResponse(r, appendingTo: nil, items: [])
        }
        #expect(store.counts.bytes <= 1 << 20 && store.counts.responses < 20, "\(store.counts)")
        let newest = try await store.response("resp_99"), oldest = try await store.response("resp_0")
        #expect(newest != nil && oldest == nil)
        now.withLock { $0 += 61_000 }
        let c = try await store.createConversation(metadata: [:], items: [], tenant: nil)
        #expect(store.counts.responses == 0 && store.counts.conversations == 1, "the responses expired at the next write: \(store.counts)")
        #expect(try await store.conversation(c.id) != nil)
    }

    /// `previous_response_id` used to load up to 100 stored responses of any size for one
    /// request; loading now stops at a byte sum, and the replayed history keeps the newest items
    /// within it. Reasoning items, never sent to a worker, are stored without their payload.
    @Test func aHistoryChainIsBoundedByBytesAndReasoningIsStoredWithoutPayload() async throws {
        let store = MemoryHistoryStore()
        var previous: String?
        for i in 0..<40 {
            let r = StoredResponse(id: "resp_\(i)", previousResponseID: previous, input: [Self.item("in\(i)", bytes: 1 << 20)], createdAt: Date(), raw: .null)
            try await store.saveResponse(r, appendingTo: nil, items: [])
            previous = r.id
        }
        let loaded = try #require(try await store.responseChain("resp_39", maxDepth: 100, maxBytes: ResponsesGateway.maxHistoryBytes))
        #expect(loaded.count <= 17 && loaded.last?.id == "resp_39", "\(loaded.count) responses loaded")
        let replayed = ResponsesGateway.newest(loaded.flatMap(\.input))
        #expect(replayed.reduce(0) { $0 + MemoryHistoryStore.bytes(of: $1) } <= ResponsesGateway.maxHistoryBytes)
        #expect(replayed.last?.id == "in39" && replayed.count >= 14, "the newest kept: \(replayed.count)")

        let huge = JSONValue.object(["type": "reasoning", "encrypted_content": .string(String(repeating: "e", count: 1 << 20)),
                                     "summary": [["type": "summary_text", "text": .string(String(repeating: "s", count: 1 << 20))]]])
        let reasoning = try ConversationItem.parse(huge, now: Date())
        #expect(reasoning.type == "reasoning" && MemoryHistoryStore.bytes(of: reasoning) < 300, "\(reasoning.content.render().prefix(200))")
    }

    /// Writes waiting for storage to come back are bounded by bytes as well as by count.
    @Test func backgroundWritesAreBoundedByCountAndBytes() {
        let writes = BackgroundWrites(maxJobs: 3, maxBytes: 100)
        func job(_ bytes: Int) -> BackgroundWrites.Job { .init(kind: "test", bytes: bytes, delays: [], attempt: { true }, lost: {}) }
        #expect(writes.submit(job(60)) && !writes.submit(job(50)) && writes.submit(job(40)))
        #expect(writes.count == 2 && writes.bytes == 100)
        let small = BackgroundWrites(maxJobs: 3, maxBytes: 100)
        #expect(small.submit(job(1)) && small.submit(job(1)) && small.submit(job(1)) && !small.submit(job(1)), "three at most")
    }

    /// An item id given again replaces its item: repeating one id cannot grow a conversation
    /// beyond what the bounds count.
    @Test func anItemIDGivenAgainReplacesItsItem() async throws {
        let store = MemoryHistoryStore()
        let c = try await store.createConversation(metadata: [:], items: [Self.item("same"), Self.item("same")], tenant: nil)
        for _ in 0..<100 { _ = try await store.addItems([Self.item("same", bytes: 20)], to: c.id) }
        let listed = try #require(try await store.items(of: c.id, limit: 100, ascending: true, after: nil))
        #expect(listed.items.map(\.id) == ["same"] && store.counts.items == 1, "\(listed.items.map(\.id)) \(store.counts)")
    }
}
