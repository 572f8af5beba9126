import Mesh
import Policies

/// The wire form of one chunk of a whole tree (`TreeChunk`), as a joining router is sent it:
///
///     model: string
///     owners: u32 count, then that many strings (worker ids; nodes name them by index)
///     ancestors: u32 count, then per ancestor u32 length and that many u64 block hashes
///     nodes: u32 count, then per node u32 depth, u32 length, the u64 hashes of its label,
///            u16 owner count, then per owner u16 index and u64 age (ms before sending)
///
/// Ages rather than stamps, because each router's monotonic clock is its own. Decoding checks
/// every count against the bytes left, so a bad chunk is refused, never a crash.
enum TreeChunkCodec {
    /// Builds one chunk's payload, refusing what would take it over `limit` bytes.
    struct Encoder {
        let model: String
        let now: UInt64
        let limit: Int
        private var owners: [String] = []
        private var ownerIndex: [String: Int] = [:]
        private var ownerBytes = 0
        private var ancestors = WireCodec.Writer()
        private var ancestorCount = 0
        private var nodes = WireCodec.Writer()
        private(set) var nodeCount = 0

        init(model: String, now: UInt64, limit: Int = WireCodec.maxPayload) {
            self.model = model
            self.now = now
            self.limit = limit
        }

        private var size: Int { 2 + model.utf8.count + 4 + ownerBytes + 4 + ancestors.bytes.count + 4 + nodes.bytes.count }

        /// Starts the chunk over with these ancestors; false when they alone do not fit.
        mutating func begin(_ labels: [ArraySlice<UInt64>]) -> Bool {
            self = Encoder(model: model, now: now, limit: limit)
            for label in labels {
                ancestors.u32(label.count)
                for h in label { ancestors.u64(h) }
            }
            ancestorCount = labels.count
            return size <= limit
        }

        /// Adds a node; false (and nothing added) when it would not fit.
        mutating func add(depth: Int, label: ArraySlice<UInt64>, owners stamps: [TreeStamp<String>]) -> Bool {
            let newOwners = Set(stamps.map(\.owner)).filter { ownerIndex[$0] == nil }
            let growth = 4 + 4 + 8 * label.count + 2 + 10 * stamps.count + newOwners.reduce(0) { $0 + 2 + min($1.utf8.count, WireCodec.maxString) }
            guard size + growth <= limit, owners.count + newOwners.count <= Int(UInt16.max), stamps.count <= Int(UInt16.max) else { return false }
            for o in newOwners {
                ownerIndex[o] = owners.count
                owners.append(o)
                ownerBytes += 2 + min(o.utf8.count, WireCodec.maxString)
            }
            nodes.u32(depth)
            nodes.u32(label.count)
            for h in label { nodes.u64(h) }
            nodes.u16(stamps.count)
            for s in stamps {
                nodes.u16(ownerIndex[s.owner]!)
                nodes.u64(now > s.lastUse ? now - s.lastUse : 0)
            }
            nodeCount += 1
            return true
        }

        var payload: [UInt8] {
            var w = WireCodec.Writer()
            w.string(model)
            w.u32(owners.count)
            for o in owners { w.string(o) }
            w.u32(ancestorCount)
            w.bytes += ancestors.bytes
            w.u32(nodeCount)
            w.bytes += nodes.bytes
            return w.bytes
        }
    }

    static func decode(_ bytes: [UInt8], now: UInt64) -> (model: String, chunk: TreeChunk<UInt64, String>)? {
        var r = WireCodec.Reader(bytes)
        guard let model = r.string(), let ownerCount = r.u32(), ownerCount <= r.left / 2 else { return nil }
        var owners: [String] = []
        for _ in 0..<ownerCount {
            guard let o = r.string() else { return nil }
            owners.append(o)
        }
        func hashes() -> [UInt64]? {
            guard let n = r.u32(), n <= r.left / 8 else { return nil }
            var out: [UInt64] = []
            out.reserveCapacity(n)
            for _ in 0..<n { guard let h = r.u64() else { return nil }; out.append(h) }
            return out
        }
        guard let ancestorCount = r.u32(), ancestorCount <= r.left / 4 else { return nil }
        var ancestors: [[UInt64]] = []
        for _ in 0..<ancestorCount {
            guard let a = hashes() else { return nil }
            ancestors.append(a)
        }
        guard let nodeCount = r.u32(), nodeCount <= r.left / 10 else { return nil }
        var nodes: [ExportedTreeNode<UInt64, String>] = []
        nodes.reserveCapacity(nodeCount)
        for _ in 0..<nodeCount {
            guard let depth = r.u32(), let label = hashes(), let k = r.u16(), k <= r.left / 10 else { return nil }
            var stamps: [TreeStamp<String>] = []
            for _ in 0..<k {
                guard let i = r.u16(), i < owners.count, let age = r.u64() else { return nil }
                stamps.append(TreeStamp(owner: owners[i], lastUse: now > age ? now - age : 0))
            }
            nodes.append(ExportedTreeNode(depth: depth, label: label, owners: stamps))
        }
        guard r.atEnd else { return nil }
        return (model, TreeChunk(ancestors: ancestors, nodes: nodes))
    }
}
