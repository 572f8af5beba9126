@testable import Node
import Policies
import Testing

/// Cache-aware tree summaries on the wire: what one router encodes, another decodes, with
/// last-use stamps carried as ages against each router's own clock.
@Suite struct TreeSyncCodecTests {
    @Test func roundTripsInDatagramSizedChunks() throws {
        var updates: [TreeUpdate<UInt64, String>] = []
        for k in 0..<400 {
            let n = UInt64(1 + k % 40)
            let path: [UInt64] = (0..<n).map { (step: UInt64) -> UInt64 in step &* 0x9E37_79B9 &+ UInt64(k) }
            updates.append(TreeUpdate(owner: "w\(k % 3)", path: path, lastUse: 9_000 + UInt64(k)))
        }
        let chunks = TreeSync.encode(model: "llama", TreeDelta(fromVersion: 0, toVersion: 9, isFull: true, updates: updates), now: 10_000)
        #expect(chunks.count > 1, "400 paths do not fit one datagram")
        var decoded: [TreeUpdate<UInt64, String>] = []
        for chunk in chunks {
            #expect(chunk.count <= 60_000)
            // Decoded on a router whose clock reads 50,000: the same ages, its own stamps.
            let (model, delta) = try #require(TreeSync.decode(chunk, now: 50_000))
            #expect(model == "llama")
            decoded += delta.updates
        }
        let expected = updates.map { (u: TreeUpdate<UInt64, String>) in TreeUpdate(owner: u.owner, path: u.path, lastUse: u.lastUse + 40_000) }
        #expect(decoded == expected)
    }

    @Test func refusesTruncatedAndPaddedPayloads() throws {
        let chunk = try #require(TreeSync.encode(model: "m", TreeDelta(fromVersion: 0, toVersion: 1, isFull: false,
                                                                       updates: [TreeUpdate(owner: "w", path: [1, 2, 3], lastUse: 5)]), now: 10).first)
        for cut in 0..<chunk.count { #expect(TreeSync.decode(Array(chunk.prefix(cut)), now: 10) == nil) }
        #expect(TreeSync.decode(chunk + [0], now: 10) == nil)
    }
}
