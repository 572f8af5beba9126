import Mesh
@testable import Node
@testable import Policies
import Primitives
import Testing

/// Whole-tree chunks on the wire, as a joining router is sent them: a real cache-aware tree
/// exported under the payload limit, decoded on a router with another clock, rebuilt whole.
@Suite struct TreeChunkCodecTests {
    /// A cache-aware policy that routed `count` prompts sharing a few system prompts.
    static func warmPolicy(count: Int) -> CacheAwarePolicy {
        var policy = CacheAwarePolicy()
        var rng = SplitMix64(seed: 7)
        let workers = (0..<3).map { WorkerCandidate(id: "http://w\($0):8000", url: "http://w\($0):8000") }
        for i in 0..<count {
            let system = String(repeating: "You are assistant \(i % 5). ", count: 20)
            let text = system + "Question \(i): " + String(repeating: "why \(Int.random(in: 0..<1000, using: &rng)) ", count: 30)
            _ = policy.select(RoutingRequest(routingText: Array(text.utf8), now: UInt64(1_000 + i)), from: workers, using: &rng)
        }
        return policy
    }

    static func encodeAll(_ policy: CacheAwarePolicy, model: String, now: UInt64, limit: Int = WireCodec.maxPayload) -> [[UInt8]] {
        var cursor = TreeExportCursor<UInt64>()
        var payloads: [[UInt8]] = []
        while !cursor.isFinished {
            var encoder = TreeChunkCodec.Encoder(model: model, now: now, limit: limit)
            let n = policy.exportChunk(after: &cursor, maxPathLength: TreeTransfers.maxPathLength,
                                       begin: { encoder.begin($0) }, accept: { encoder.add(depth: $0, label: $1, owners: $2) })
            if n > 0 { payloads.append(encoder.payload) }
        }
        return payloads
    }

    @Test func aWarmTreeTravelsWholeInChunksUnderTheLimit() throws {
        let source = Self.warmPolicy(count: 3_000)
        let payloads = Self.encodeAll(source, model: "llama", now: 10_000)
        #expect(payloads.count > 5, "a 3,000-prompt tree is many chunks")
        var copy = CacheAwarePolicy()
        for p in payloads {
            #expect(p.count <= WireCodec.maxPayload)
            // Decoded where the clock reads 50,000: ages kept, stamps in the receiver's clock.
            let (model, chunk) = try #require(TreeChunkCodec.decode(p, now: 50_000))
            #expect(model == "llama")
            let applied = copy.apply(chunk: chunk)
            #expect(applied)
        }
        #expect(copy.stateSize == source.stateSize)
        let leaves = { (p: CacheAwarePolicy) in Set(p.tree.ownerLeaves().map { "\($0.path) \($0.lastUse)" }) }
        #expect(leaves(copy) == Set(source.tree.ownerLeaves().map { "\($0.path) \($0.lastUse + 40_000)" }))
        // Every prompt finds the same worker in the copy.
        for i in stride(from: 0, to: 3_000, by: 97) {
            let text = Array((String(repeating: "You are assistant \(i % 5). ", count: 20) + "Question \(i): ").utf8)
            #expect(copy.cachedPrefix(of: text).workers == source.cachedPrefix(of: text).workers)
        }
    }

    @Test func anEncoderRefusesWhatWouldNotFit() {
        var encoder = TreeChunkCodec.Encoder(model: "m", now: 10, limit: 200)
        let tooLong = encoder.begin([ArraySlice(Array(repeating: 7, count: 30))])
        #expect(!tooLong, "240 bytes of ancestors")
        let short = encoder.begin([ArraySlice([1, 2])])
        let small = encoder.add(depth: 2, label: [3, 4], owners: [TreeStamp(owner: "w", lastUse: 5)])
        let big = encoder.add(depth: 3, label: ArraySlice(Array(repeating: 9, count: 20)), owners: [])
        #expect(short && small && !big)
        #expect(encoder.nodeCount == 1, "a refused node leaves nothing behind")
        #expect(encoder.payload.count <= 200)
    }

    @Test func refusesTruncatedPaddedAndInconsistentPayloads() throws {
        let payload = try #require(Self.encodeAll(Self.warmPolicy(count: 20), model: "m", now: 10).first)
        for cut in stride(from: 0, to: payload.count, by: 7) { #expect(TreeChunkCodec.decode(Array(payload.prefix(cut)), now: 10) == nil) }
        #expect(TreeChunkCodec.decode(payload + [0], now: 10) == nil)
        // A node naming an owner index past the table.
        var encoder = TreeChunkCodec.Encoder(model: "m", now: 10)
        _ = encoder.begin([])
        _ = encoder.add(depth: 1, label: [1], owners: [TreeStamp(owner: "w", lastUse: 5)])
        var bytes = encoder.payload
        bytes[bytes.count - 10] = 5  // the owner index's low byte
        #expect(TreeChunkCodec.decode(bytes, now: 10) == nil)
    }
}
