@testable import Mesh
import MeshCore
import Testing

@Suite struct WireCodecTests {
    let member = SwimNode.Member(name: "router-1", address: "127.0.0.1:39527", generation: 77, incarnation: 3, status: .suspect, origin: "router-2")

    var samples: [MeshMessage] {
        let stamp = HLCStamp(wallMs: 5, logical: 2, node: 99)
        let vector = VersionVector([1: 5, 0xFFFF_FFFF_FFFF_FFFF: 2])
        let entries = [ReplicatedEntry(store: "workers", key: "http://w:1", value: [1, 2, 3], stamp: stamp, dot: Dot(origin: 1, seq: 5)),
                       ReplicatedEntry(store: "sessions", key: "gone", value: nil, stamp: stamp, dot: Dot(origin: 7, seq: 1), seen: vector),
                       ReplicatedEntry(store: "", key: "", value: [], stamp: .zero, dot: Dot(origin: 0, seq: 0))]
        return [.node(.swim(.ping(seq: 1, gossip: []))), .node(.swim(.ping(seq: 2, gossip: [member, member]))), .node(.swim(.ack(seq: .max, gossip: [member]))),
                .node(.swim(.pingReq(seq: 9, target: "router-3", gossip: [member]))), .node(.swim(.join(member))),
                .node(.swim(.sync([member, member, member], reply: true))), .node(.swim(.sync([], reply: false))),
                .node(.push(entries)), .node(.push([])),
                .node(.digest(ReplicationDigest(context: CausalContext(vector: vector, cloud: [Dot(origin: 4, seq: 44)]), liveCount: 3, fingerprint: 0xDEAD_BEEF), reply: true)),
                .node(.digest(ReplicationDigest(context: CausalContext(), liveCount: 0, fingerprint: 0), reply: false)),
                .node(.digest(ReplicationDigest(vector: .summary(VectorSummary(hash: 42)), liveCount: 1, fingerprint: 2), reply: true)),
                .node(.digest(ReplicationDigest(vector: .summary(VectorSummary(of: vector, exactMask: 0b1010)), cloud: [Dot(origin: 1, seq: 9)],
                                                liveCount: 1, fingerprint: 2), reply: false)),
                .node(.swim(.syncDigest((0..<64).map { UInt64($0) * 0x0101_0101 }))),
                .node(.swim(.syncBuckets(mask: .max, members: [member], reply: true))), .node(.swim(.syncBuckets(mask: 0, members: [], reply: false))),
                .node(.answer(entries, through: vector)),
                .node(.state(entries, context: CausalContext(vector: vector, cloud: [Dot(origin: 3, seq: 9)]), reply: true)),
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

    @Test func longStringsAreCutOnAScalarBoundaryAndStillDecode() {
        // Every alignment of a multi-byte character across the cut.
        for pad in 0..<4 {
            for scalar in ["é", "€", "😀"] {
                let long = String(repeating: "a", count: WireCodec.maxString - 3 + pad) + String(repeating: scalar, count: 400)
                let m = MeshMessage.node(.push([ReplicatedEntry(store: "sessions", key: long, value: [1], stamp: .zero, dot: Dot(origin: 1, seq: 1))]))
                let e = WireCodec.Envelope(sender: long, generation: 1, counter: 1, message: m)
                let decoded = WireCodec.decode(WireCodec.encode(e))
                #expect(decoded != nil, "pad \(pad) \(scalar)")
                #expect(decoded.map { long.hasPrefix($0.sender) && $0.sender.utf8.count <= WireCodec.maxString } == true)
            }
        }
        // Short strings are untouched.
        #expect(WireCodec.cut("añb😀") == Array("añb😀".utf8))
    }

    @Test func randomBytesNeverCrash() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            let junk = (0..<Int.random(in: 0..<300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = WireCodec.decode(junk)
        }
        // A claimed huge member count with no data behind it is refused, not allocated.
        #expect(WireCodec.decode([0, 1, 0x61, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xFF, 0xFF]) == nil)
        // Likewise a claimed 4-billion-entry push.
        #expect(WireCodec.decode([0, 1, 0x61, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 6, 0xFF, 0xFF, 0xFF, 0xFF]) == nil)
    }
}
