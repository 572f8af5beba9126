@testable import Mesh
import MeshCore
import Testing

@Suite struct WireCodecTests {
    let member = SwimNode.Member(name: "router-1", address: "127.0.0.1:39527", generation: 77, incarnation: 3, status: .suspect, origin: "router-2")

    var samples: [MeshMessage] {
        let stamp = HLCStamp(wallMs: 5, logical: 2, node: 99)
        return [.swim(.ping(seq: 1, gossip: [])), .swim(.ping(seq: 2, gossip: [member, member])), .swim(.ack(seq: .max, gossip: [member])),
                .swim(.pingReq(seq: 9, target: "router-3", gossip: [member])), .swim(.join(member)), .swim(.sync([member, member, member], reply: true)),
                .swim(.sync([], reply: false)),
                .delta(ReplicationDelta(store: "workers", entries: [.init(key: "http://w:1", value: [1, 2, 3], stamp: stamp), .init(key: "gone", value: nil, stamp: stamp)])),
                .digest(["workers": StoreDigest(count: 3, hash: 0xDEAD_BEEF), "sessions": StoreDigest(count: 0, hash: 0)]),
                .custom(topic: "tree", payload: [9, 8, 7]), .custom(topic: "", payload: [])]
    }

    @Test func everyMessageRoundTrips() {
        for m in samples {
            let e = WireCodec.Envelope(sender: "127.0.0.1:1", generation: 123, counter: 456, message: m)
            #expect(WireCodec.decode(WireCodec.encode(e)) == e)
        }
    }

    @Test func truncatedOrExtendedInputIsRefused() {
        for m in samples {
            let bytes = WireCodec.encode(WireCodec.Envelope(sender: "a", generation: 1, counter: 2, message: m))
            for cut in 0..<bytes.count { #expect(WireCodec.decode(Array(bytes[..<cut])) == nil) }
            #expect(WireCodec.decode(bytes + [0]) == nil)
        }
    }

    @Test func randomBytesNeverCrash() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            let junk = (0..<Int.random(in: 0..<300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = WireCodec.decode(junk)
        }
        // A claimed huge member count with no data behind it is refused, not allocated.
        #expect(WireCodec.decode([0, 1, 0x61, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xFF, 0xFF]) == nil)
    }
}
