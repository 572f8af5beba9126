import MeshCore

/// What travels between routers: SWIM's membership messages and the replication traffic.
public enum MeshMessage: Sendable, Equatable {
    case swim(SwimNode.Message)
    case delta(ReplicationDelta)
    case digest(ReplicationDigest)
    /// An opaque message for a topic the router defines (the cache-aware tree summaries).
    case custom(topic: String, payload: [UInt8])
}

/// The mesh's binary wire format (inside the sealed packet): an envelope naming the sender's
/// generation and packet counter (for the replay filter), then one SWIM message. Decoding
/// checks every length against what is left, so hostile input yields nil, never a crash.
public enum WireCodec {
    public struct Envelope: Sendable, Equatable {
        /// The sender's advertised mesh address (what SWIM calls it), whatever the packet's
        /// source address looks like through NAT or a wildcard bind.
        public var sender: String
        public var generation: UInt64
        public var counter: UInt64
        public var message: MeshMessage
        public init(sender: String, generation: UInt64, counter: UInt64, message: MeshMessage) {
            self.sender = sender
            self.generation = generation
            self.counter = counter
            self.message = message
        }
    }

    /// Limits that bound what one packet can make a node allocate.
    static let maxString = 1024
    static let maxMembers = 4096
    static let maxBlob = 16 * 1024
    /// A custom payload must fit a datagram with room for the headers.
    public static let maxPayload = 60_000

    public static func encode(_ e: Envelope) -> [UInt8] {
        var w = Writer()
        w.string(e.sender)
        w.u64(e.generation)
        w.u64(e.counter)
        switch e.message {
        case .swim(.ping(let seq, let gossip)): w.u8(1); w.u64(seq); w.members(gossip)
        case .swim(.ack(let seq, let gossip)): w.u8(2); w.u64(seq); w.members(gossip)
        case .swim(.pingReq(let seq, let target, let gossip)): w.u8(3); w.u64(seq); w.string(target); w.members(gossip)
        case .swim(.join(let m)): w.u8(4); w.member(m)
        case .swim(.sync(let all, let reply)): w.u8(5); w.u8(reply ? 1 : 0); w.members(all)
        case .delta(let d):
            w.u8(6); w.string(d.store); w.u16(d.entries.count)
            for entry in d.entries {
                w.string(entry.key); w.stamp(entry.stamp)
                if let v = entry.value { w.u8(1); w.blob(v) } else { w.u8(0) }
            }
        case .custom(let topic, let payload):
            w.u8(8); w.string(topic); w.u64(UInt64(payload.count)); w.bytes.append(contentsOf: payload)
        case .digest(let digest):
            w.u8(7); w.u16(digest.count)
            for (store, d) in digest.sorted(by: { $0.key < $1.key }) { w.string(store); w.u64(d.count); w.u64(d.hash) }
        }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> Envelope? {
        var r = Reader(bytes: bytes)
        guard let sender = r.string(), let generation = r.u64(), let counter = r.u64(), let kind = r.u8() else { return nil }
        let message: MeshMessage
        switch kind {
        case 1:
            guard let seq = r.u64(), let g = r.members() else { return nil }
            message = .swim(.ping(seq: seq, gossip: g))
        case 2:
            guard let seq = r.u64(), let g = r.members() else { return nil }
            message = .swim(.ack(seq: seq, gossip: g))
        case 3:
            guard let seq = r.u64(), let target = r.string(), let g = r.members() else { return nil }
            message = .swim(.pingReq(seq: seq, target: target, gossip: g))
        case 4:
            guard let m = r.member() else { return nil }
            message = .swim(.join(m))
        case 5:
            guard let reply = r.u8(), let all = r.members() else { return nil }
            message = .swim(.sync(all, reply: reply == 1))
        case 6:
            guard let store = r.string(), let n = r.u16(), n <= maxMembers else { return nil }
            var entries: [ReplicationDelta.Entry] = []
            for _ in 0..<n {
                guard let key = r.string(), let stamp = r.stamp(), let has = r.u8(), has <= 1 else { return nil }
                var value: [UInt8]?
                if has == 1 { guard let v = r.blob() else { return nil }; value = v }
                entries.append(.init(key: key, value: value, stamp: stamp))
            }
            message = .delta(ReplicationDelta(store: store, entries: entries))
        case 7:
            guard let n = r.u16(), n <= 64 else { return nil }
            var digest: ReplicationDigest = [:]
            for _ in 0..<n {
                guard let store = r.string(), let count = r.u64(), let hash = r.u64() else { return nil }
                digest[store] = StoreDigest(count: count, hash: hash)
            }
            message = .digest(digest)
        case 8:
            guard let topic = r.string(), let n = r.u64(), n <= UInt64(maxPayload), r.i + Int(n) <= bytes.count else { return nil }
            message = .custom(topic: topic, payload: Array(bytes[r.i..<(r.i + Int(n))]))
            r.i += Int(n)
        default:
            return nil
        }
        guard r.atEnd else { return nil }
        return Envelope(sender: sender, generation: generation, counter: counter, message: message)
    }

    struct Writer {
        var bytes: [UInt8] = []
        mutating func u8(_ v: UInt8) { bytes.append(v) }
        mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
        mutating func u16(_ v: Int) { bytes.append(UInt8(v >> 8 & 0xFF)); bytes.append(UInt8(v & 0xFF)) }
        mutating func stamp(_ s: HLCStamp) { u64(s.wallMs); u64(UInt64(s.logical)); u64(s.node) }
        mutating func blob(_ b: [UInt8]) {
            u16(min(b.count, WireCodec.maxBlob))
            bytes.append(contentsOf: b.prefix(WireCodec.maxBlob))
        }
        mutating func string(_ s: String) {
            let u = Array(s.utf8.prefix(WireCodec.maxString))
            bytes.append(UInt8(u.count >> 8)); bytes.append(UInt8(u.count & 0xFF))
            bytes.append(contentsOf: u)
        }
        mutating func member(_ m: SwimNode.Member) {
            string(m.name); string(m.address); u64(m.generation); u64(m.incarnation)
            u8(m.status == .alive ? 0 : m.status == .suspect ? 1 : m.status == .dead ? 2 : 3)
            string(m.origin)
        }
        mutating func members(_ ms: [SwimNode.Member]) {
            let n = min(ms.count, WireCodec.maxMembers)
            bytes.append(UInt8(n >> 8)); bytes.append(UInt8(n & 0xFF))
            for m in ms.prefix(n) { member(m) }
        }
    }

    struct Reader {
        let bytes: [UInt8]
        var i = 0
        var atEnd: Bool { i == bytes.count }
        mutating func u8() -> UInt8? {
            guard i < bytes.count else { return nil }
            defer { i += 1 }
            return bytes[i]
        }
        mutating func u16() -> Int? {
            guard let a = u8(), let b = u8() else { return nil }
            return Int(a) << 8 | Int(b)
        }
        mutating func u64() -> UInt64? {
            guard i + 8 <= bytes.count else { return nil }
            var v: UInt64 = 0
            for k in 0..<8 { v = v << 8 | UInt64(bytes[i + k]) }
            i += 8
            return v
        }
        mutating func stamp() -> HLCStamp? {
            guard let wall = u64(), let logical = u64(), logical <= UInt64(UInt32.max), let node = u64() else { return nil }
            return HLCStamp(wallMs: wall, logical: UInt32(logical), node: node)
        }
        mutating func blob() -> [UInt8]? {
            guard let n = u16(), n <= WireCodec.maxBlob, i + n <= bytes.count else { return nil }
            defer { i += n }
            return Array(bytes[i..<(i + n)])
        }
        mutating func string() -> String? {
            guard let n = u16(), n <= WireCodec.maxString, i + n <= bytes.count else { return nil }
            defer { i += n }
            return String(validating: bytes[i..<(i + n)], as: UTF8.self)
        }
        mutating func member() -> SwimNode.Member? {
            guard let name = string(), let address = string(), let generation = u64(), let incarnation = u64(), let s = u8(), s <= 3,
                  let origin = string() else { return nil }
            let status: SwimNode.Status = s == 0 ? .alive : s == 1 ? .suspect : s == 2 ? .dead : .left
            return SwimNode.Member(name: name, address: address, generation: generation, incarnation: incarnation, status: status, origin: origin)
        }
        mutating func members() -> [SwimNode.Member]? {
            guard let n = u16(), n <= WireCodec.maxMembers else { return nil }
            var out: [SwimNode.Member] = []
            for _ in 0..<n {
                guard let m = member() else { return nil }
                out.append(m)
            }
            return out
        }
    }
}
