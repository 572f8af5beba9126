/// One change to ship or apply: the entries of one store, each with its HLC stamp.
public struct ReplicationDelta: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var key: String
        public var value: [UInt8]?
        public var stamp: HLCStamp
        public init(key: String, value: [UInt8]?, stamp: HLCStamp) {
            self.key = key
            self.value = value
            self.stamp = stamp
        }
    }
    public var store: String
    public var entries: [Entry]
    public init(store: String, entries: [Entry]) {
        self.store = store
        self.entries = entries
    }
}

/// Per store, per origin node, the newest stamp this replica holds: what a peer is asked to
/// fill in (only entries above it travel).
public typealias ReplicationDigest = [String: [UInt64: HLCStamp]]

/// Delta-state replication of named last-writer-wins stores, pure: physical time comes in,
/// deltas and digests go out. A local write returns the delta to push to every live member
/// at once; a periodic digest exchange (anti-entropy) repairs whatever a lost packet missed.
/// Values are opaque bytes: the router's bridge decides what a worker or a session key is.
public struct Replicator: Sendable {
    public typealias Store = LWWMap<String, [UInt8]>

    public private(set) var stores: [String: Store] = [:]
    private var clock: HybridLogicalClock

    public init(node: UInt64) {
        clock = HybridLogicalClock(node: node)
    }

    public var nodeID: UInt64 { clock.node }

    public func value(_ store: String, _ key: String) -> [UInt8]? { stores[store]?[key] }

    /// A local write (nil deletes); returns the delta to push.
    public mutating func set(_ store: String, _ key: String, _ value: [UInt8]?, physicalMs: UInt64) -> ReplicationDelta {
        let stamp = clock.now(physicalMs: physicalMs)
        stores[store, default: Store()].set(key, value, stamp: stamp)
        return ReplicationDelta(store: store, entries: [.init(key: key, value: value, stamp: stamp)])
    }

    /// Applies a delta from a peer; returns the entries that changed this replica.
    public mutating func apply(_ delta: ReplicationDelta, physicalMs: UInt64) -> [ReplicationDelta.Entry] {
        var changed: [ReplicationDelta.Entry] = []
        var store = stores[delta.store] ?? Store()
        for e in delta.entries {
            clock.observe(e.stamp, physicalMs: physicalMs)
            if let mine = store.entries[e.key], mine.stamp >= e.stamp { continue }
            store.set(e.key, e.value, stamp: e.stamp)
            changed.append(e)
        }
        stores[delta.store] = store
        return changed
    }

    public func digest() -> ReplicationDigest {
        var d: ReplicationDigest = [:]
        for (name, store) in stores {
            var perOrigin: [UInt64: HLCStamp] = [:]
            for e in store.entries.values where e.stamp > perOrigin[e.stamp.node, default: .zero] { perOrigin[e.stamp.node] = e.stamp }
            d[name] = perOrigin
        }
        return d
    }

    /// What a peer with `digest` lacks, in deltas of at most `maxEntries` entries each.
    public func missing(for digest: ReplicationDigest, maxEntries: Int = 128) -> [ReplicationDelta] {
        var out: [ReplicationDelta] = []
        for (name, store) in stores.sorted(by: { $0.key < $1.key }) {
            let theirs = digest[name] ?? [:]
            let newer = store.entries.filter { $0.value.stamp > theirs[$0.value.stamp.node, default: .zero] }
                .sorted { $0.value.stamp < $1.value.stamp }
                .map { ReplicationDelta.Entry(key: $0.key, value: $0.value.value, stamp: $0.value.stamp) }
            var i = 0
            while i < newer.count {
                out.append(ReplicationDelta(store: name, entries: Array(newer[i..<min(i + maxEntries, newer.count)])))
                i += maxEntries
            }
        }
        return out
    }
}
