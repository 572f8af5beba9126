import MeshCore

/// What travels between routers: the mesh protocol's messages (membership and replication),
/// and opaque messages for topics the router defines.
public enum MeshMessage: Sendable, Equatable {
    case node(MeshNode.Message)
    /// An opaque message for a topic the router defines (the cache-aware tree summaries).
    case custom(topic: String, payload: [UInt8])
}

/// The mesh's binary wire format (inside the sealed packet or frame): an envelope naming the
/// sender's generation and packet counter (for the replay filter), then one message. All
/// integers are big-endian. Decoding checks every length against what is left, so hostile
/// input yields nil, never a crash, and no count can make a node allocate more than the
/// bytes it was sent could describe. docs/mesh-protocol.md has the layout.
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

    /// Limits that bound what one message can make a node allocate.
    /// Longer strings are cut on a Unicode scalar boundary (so what arrives still decodes);
    /// `MeshService.publish` refuses keys past it, so a key is never stored whole here and cut
    /// there. Worker URLs (at most 2,048 bytes) fit.
    public static let maxString = 4096
    static let maxMembers = 4096
    public static let maxBlob = 16 * 1024
    static let maxVector = 4096
    /// A custom payload's limit (TreeSync chunks its summaries below it).
    public static let maxPayload = 60_000
    /// The smallest encoded entry (empty strings, no value): bounds entry counts by bytes left.
    static let minEntrySize = 2 + 2 + 24 + 16 + 1

    /// The UTF-8 of `s`, at most `maxString` bytes, never ending inside a scalar: a cut after the
    /// lead byte of a multi-byte character would make the string fail to decode on every peer,
    /// and with it every message carrying it, forever.
    static func cut(_ s: String) -> [UInt8] {
        let all = s.utf8
        guard all.count > maxString else { return Array(all) }
        var bytes = Array(all.prefix(maxString + 1))
        var end = maxString
        while end > 0, bytes[end] & 0xC0 == 0x80 { end -= 1 }  // bytes[end] continues a scalar
        bytes.removeSubrange(end...)
        return bytes
    }

    public static func encode(_ e: Envelope) -> [UInt8] {
        var w = Writer()
        w.string(e.sender)
        w.u64(e.generation)
        w.u64(e.counter)
        switch e.message {
        case .node(.swim(.ping(let seq, let gossip))): w.u8(1); w.u64(seq); w.members(gossip)
        case .node(.swim(.ack(let seq, let gossip))): w.u8(2); w.u64(seq); w.members(gossip)
        case .node(.swim(.pingReq(let seq, let target, let gossip))): w.u8(3); w.u64(seq); w.string(target); w.members(gossip)
        case .node(.swim(.join(let m))): w.u8(4); w.member(m)
        case .node(.swim(.sync(let all, let reply))): w.u8(5); w.u8(reply ? 1 : 0); w.members(all)
        case .node(.swim(.syncDigest(let buckets))): w.u8(12); w.u8(UInt8(buckets.count)); for b in buckets { w.u64(b) }
        case .node(.swim(.syncBuckets(let mask, let members, let reply))): w.u8(13); w.u8(reply ? 1 : 0); w.u64(mask); w.members(members)
        case .node(.push(let entries)): w.u8(6); w.entries(entries)
        case .node(.digest(let d, let reply)):
            switch d.vector {
            case .whole(let v):
                w.u8(7); w.u8(reply ? 1 : 0); w.vector(v); w.cloud(d.cloud)
            case .summary(let summary):
                w.u8(11); w.u8(reply ? 1 : 0); w.summary(summary); w.cloud(d.cloud)
            }
            w.u64(d.liveCount); w.u64(d.fingerprint)
        case .custom(let topic, let payload):
            w.u8(8); w.string(topic); w.u64(UInt64(payload.count)); w.bytes.append(contentsOf: payload)
        case .node(.answer(let entries, let vector, let retired)):
            // Kind 9 without floors, as versions before retirement read it.
            w.u8(retired.counters.isEmpty ? 9 : 14); w.vector(vector); w.entries(entries)
            if !retired.counters.isEmpty { w.vector(retired) }
        case .node(.state(let entries, let context, let reply)) where !context.retired.isEmpty:
            w.u8(15); w.u8(reply ? 1 : 0); w.context(context); w.entries(entries); w.vector(VersionVector(context.retired))
        case .node(.state(let entries, let context, let reply)):
            w.u8(10); w.u8(reply ? 1 : 0); w.context(context); w.entries(entries)
        }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> Envelope? {
        var r = Reader(bytes)
        guard let sender = r.string(), let generation = r.u64(), let counter = r.u64(), let kind = r.u8() else { return nil }
        let message: MeshMessage
        switch kind {
        case 1:
            guard let seq = r.u64(), let g = r.members() else { return nil }
            message = .node(.swim(.ping(seq: seq, gossip: g)))
        case 2:
            guard let seq = r.u64(), let g = r.members() else { return nil }
            message = .node(.swim(.ack(seq: seq, gossip: g)))
        case 3:
            guard let seq = r.u64(), let target = r.string(), let g = r.members() else { return nil }
            message = .node(.swim(.pingReq(seq: seq, target: target, gossip: g)))
        case 4:
            guard let m = r.member() else { return nil }
            message = .node(.swim(.join(m)))
        case 5:
            guard let reply = r.flag(), let all = r.members() else { return nil }
            message = .node(.swim(.sync(all, reply: reply)))
        case 12:
            guard let n = r.u8(), Int(n) == VectorSummary.bucketCount else { return nil }
            var buckets: [UInt64] = []
            for _ in 0..<n {
                guard let b = r.u64() else { return nil }
                buckets.append(b)
            }
            message = .node(.swim(.syncDigest(buckets)))
        case 13:
            guard let reply = r.flag(), let mask = r.u64(), let members = r.members() else { return nil }
            message = .node(.swim(.syncBuckets(mask: mask, members: members, reply: reply)))
        case 6:
            guard let entries = r.entries() else { return nil }
            message = .node(.push(entries))
        case 7, 11:
            guard let reply = r.flag(), let vector = kind == 7 ? r.vector().map(ReplicationDigest.Vector.whole) : r.summary().map(ReplicationDigest.Vector.summary),
                  let cloud = r.cloud(), let live = r.u64(), let fingerprint = r.u64() else { return nil }
            message = .node(.digest(ReplicationDigest(vector: vector, cloud: cloud, liveCount: live, fingerprint: fingerprint), reply: reply))
        case 8:
            guard let topic = r.string(), let n = r.u64(), n <= UInt64(maxPayload), r.i + Int(n) <= bytes.count else { return nil }
            message = .custom(topic: topic, payload: Array(bytes[r.i..<(r.i + Int(n))]))
            r.i += Int(n)
        case 9, 14:
            guard let vector = r.vector(), let entries = r.entries(), let retired = kind == 9 ? VersionVector() : r.vector() else { return nil }
            message = .node(.answer(entries, through: vector, retired: retired))
        case 10, 15:
            guard let reply = r.flag(), let context = r.context(), let entries = r.entries(),
                  let retired = kind == 10 ? VersionVector() : r.vector() else { return nil }
            message = .node(.state(entries, context: CausalContext(vector: context.vector, cloud: context.cloud, retired: retired.counters), reply: reply))
        default:
            return nil
        }
        guard r.atEnd else { return nil }
        return Envelope(sender: sender, generation: generation, counter: counter, message: message)
    }

    /// Big-endian primitives, strings as a 16-bit length and UTF-8: the mesh's messages, and the
    /// payloads the router sends on custom topics (cache-aware tree summaries).
    public struct Writer {
        public var bytes: [UInt8] = []
        public init() {}
        public mutating func u8(_ v: UInt8) { bytes.append(v) }
        public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
        public mutating func u16(_ v: Int) { bytes.append(UInt8(v >> 8 & 0xFF)); bytes.append(UInt8(v & 0xFF)) }
        public mutating func u32(_ v: Int) { for k in [24, 16, 8, 0] { bytes.append(UInt8(v >> k & 0xFF)) } }
        mutating func vector(_ v: VersionVector) {
            let pairs = v.counters.sorted { $0.key < $1.key }.prefix(WireCodec.maxVector)
            u16(pairs.count)
            for (origin, seq) in pairs { u64(origin); u64(seq) }
        }
        mutating func context(_ c: CausalContext) {
            vector(c.vector)
            cloud(c.cloud)
        }
        mutating func cloud(_ dots: Set<Dot>) {
            let cloud = dots.sorted()
            u32(cloud.count)
            for dot in cloud { u64(dot.origin); u64(dot.seq) }
        }
        mutating func summary(_ s: VectorSummary) {
            u64(s.hash)
            u8(UInt8(s.buckets.count))
            for b in s.buckets { u64(b) }
            u64(s.exactMask)
            vector(s.exact)
        }
        mutating func entries(_ es: [ReplicatedEntry]) {
            u32(es.count)
            for e in es {
                string(e.store); string(e.key); stamp(e.stamp); u64(e.dot.origin); u64(e.dot.seq)
                u8((e.value == nil ? 0 : 1) | (e.seen == nil ? 0 : 2))
                if let v = e.value { blob(v) }
                if let seen = e.seen { vector(seen) }
            }
        }
        mutating func stamp(_ s: HLCStamp) { u64(s.wallMs); u64(UInt64(s.logical)); u64(s.node) }
        mutating func blob(_ b: [UInt8]) {
            u16(min(b.count, WireCodec.maxBlob))
            bytes.append(contentsOf: b.prefix(WireCodec.maxBlob))
        }
        public mutating func string(_ s: String) {
            let u = WireCodec.cut(s)
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

    /// Reads what `Writer` wrote; every read is bounds-checked and answers nil past the end.
    public struct Reader {
        let bytes: [UInt8]
        var i = 0
        public init(_ bytes: [UInt8]) { self.bytes = bytes }
        public var atEnd: Bool { i == bytes.count }
        public var left: Int { bytes.count - i }
        mutating func flag() -> Bool? {
            guard let b = u8(), b <= 1 else { return nil }
            return b == 1
        }
        public mutating func u32() -> Int? {
            guard let a = u16(), let b = u16() else { return nil }
            return a << 16 | b
        }
        mutating func vector() -> VersionVector? {
            guard let n = u16(), n <= WireCodec.maxVector, n <= left / 16 else { return nil }
            var counters: [UInt64: UInt64] = [:]
            for _ in 0..<n {
                guard let origin = u64(), let seq = u64() else { return nil }
                counters[origin] = seq
            }
            return VersionVector(counters)
        }
        mutating func context() -> CausalContext? {
            guard let vector = vector(), let cloud = cloud() else { return nil }
            return CausalContext(vector: vector, cloud: cloud)
        }
        mutating func cloud() -> Set<Dot>? {
            guard let n = u32(), n <= left / 16 else { return nil }
            var cloud: Set<Dot> = []
            for _ in 0..<n {
                guard let origin = u64(), let seq = u64() else { return nil }
                cloud.insert(Dot(origin: origin, seq: seq))
            }
            return cloud
        }
        /// A vector summary: a hash, no bucket hashes or all 64, and exact counters.
        mutating func summary() -> VectorSummary? {
            guard let hash = u64(), let n = u8(), n == 0 || Int(n) == VectorSummary.bucketCount else { return nil }
            var buckets: [UInt64] = []
            for _ in 0..<n {
                guard let b = u64() else { return nil }
                buckets.append(b)
            }
            guard let mask = u64(), let exact = vector() else { return nil }
            return VectorSummary(hash: hash, buckets: buckets, exactMask: mask, exact: exact)
        }
        mutating func entries() -> [ReplicatedEntry]? {
            guard let n = u32(), n <= left / WireCodec.minEntrySize else { return nil }
            var out: [ReplicatedEntry] = []
            out.reserveCapacity(n)
            for _ in 0..<n {
                guard let store = string(), let key = string(), let stamp = stamp(), let origin = u64(), let seq = u64(),
                      let flags = u8(), flags <= 3 else { return nil }
                var value: [UInt8]?
                if flags & 1 != 0 { guard let v = blob() else { return nil }; value = v }
                var seen: VersionVector?
                if flags & 2 != 0 { guard let v = vector() else { return nil }; seen = v }
                out.append(ReplicatedEntry(store: store, key: key, value: value, stamp: stamp, dot: Dot(origin: origin, seq: seq), seen: seen))
            }
            return out
        }
        public mutating func u8() -> UInt8? {
            guard i < bytes.count else { return nil }
            defer { i += 1 }
            return bytes[i]
        }
        public mutating func u16() -> Int? {
            guard let a = u8(), let b = u8() else { return nil }
            return Int(a) << 8 | Int(b)
        }
        public mutating func u64() -> UInt64? {
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
        public mutating func string() -> String? {
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
