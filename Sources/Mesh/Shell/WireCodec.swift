import MeshCore

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
        public var message: SwimNode.Message
        public init(sender: String, generation: UInt64, counter: UInt64, message: SwimNode.Message) {
            self.sender = sender
            self.generation = generation
            self.counter = counter
            self.message = message
        }
    }

    /// Limits that bound what one packet can make a node allocate.
    static let maxString = 1024
    static let maxMembers = 4096

    public static func encode(_ e: Envelope) -> [UInt8] {
        var w = Writer()
        w.string(e.sender)
        w.u64(e.generation)
        w.u64(e.counter)
        switch e.message {
        case .ping(let seq, let gossip): w.u8(1); w.u64(seq); w.members(gossip)
        case .ack(let seq, let gossip): w.u8(2); w.u64(seq); w.members(gossip)
        case .pingReq(let seq, let target, let gossip): w.u8(3); w.u64(seq); w.string(target); w.members(gossip)
        case .join(let m): w.u8(4); w.member(m)
        case .sync(let all, let reply): w.u8(5); w.u8(reply ? 1 : 0); w.members(all)
        }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> Envelope? {
        var r = Reader(bytes: bytes)
        guard let sender = r.string(), let generation = r.u64(), let counter = r.u64(), let kind = r.u8() else { return nil }
        let message: SwimNode.Message
        switch kind {
        case 1:
            guard let seq = r.u64(), let g = r.members() else { return nil }
            message = .ping(seq: seq, gossip: g)
        case 2:
            guard let seq = r.u64(), let g = r.members() else { return nil }
            message = .ack(seq: seq, gossip: g)
        case 3:
            guard let seq = r.u64(), let target = r.string(), let g = r.members() else { return nil }
            message = .pingReq(seq: seq, target: target, gossip: g)
        case 4:
            guard let m = r.member() else { return nil }
            message = .join(m)
        case 5:
            guard let reply = r.u8(), let all = r.members() else { return nil }
            message = .sync(all, reply: reply == 1)
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
