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

/// Per store, a fingerprint of everything this replica holds (count and an order-independent
/// hash of every key, stamp and value). A peer whose fingerprint differs is sent the whole
/// store: merges are idempotent, so over-sending is safe, and the fingerprint — unlike a
/// per-origin high-water mark — cannot be fooled by a datagram lost *before* a later one.
public struct StoreDigest: Sendable, Hashable {
    public var count: UInt64
    public var hash: UInt64
    public init(count: UInt64, hash: UInt64) {
        self.count = count
        self.hash = hash
    }
}

public typealias ReplicationDigest = [String: StoreDigest]

/// Delta-state replication of named last-writer-wins stores, pure: physical time comes in,
/// deltas and digests go out. A local write returns the delta to push to every live member
/// at once; a periodic digest exchange (anti-entropy) repairs whatever a lost packet missed.
/// Values are opaque bytes: the router's bridge decides what a worker or a session key is.
///
/// Tombstones (deletions) are kept for `tombstoneHorizonMs` of wall time, long past any
/// gossip round, then collected; older ones are left out of digests and exchanges, so a peer
/// cannot bring them back. A replica cut off for longer than the horizon may resurrect a
/// deleted entry when it returns: the price of not tracking every member's acknowledgements.
public struct Replicator: Sendable {
    public typealias Store = LWWMap<String, [UInt8]>

    public private(set) var stores: [String: Store] = [:]
    private var clock: HybridLogicalClock
    public let tombstoneHorizonMs: UInt64

    public init(node: UInt64, tombstoneHorizonMs: UInt64 = 10 * 60 * 1000) {
        clock = HybridLogicalClock(node: node)
        self.tombstoneHorizonMs = tombstoneHorizonMs
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

    /// Whether an entry still takes part in replication (live values, and young tombstones).
    private func isCurrent(_ e: Store.Entry, nowMs: UInt64) -> Bool {
        !e.isTombstone || e.stamp.wallMs + tombstoneHorizonMs > nowMs
    }

    public func digest(nowMs: UInt64) -> ReplicationDigest {
        var d: ReplicationDigest = [:]
        for (name, store) in stores {
            var count: UInt64 = 0, hash: UInt64 = 0
            for (key, e) in store.entries where isCurrent(e, nowMs: nowMs) {
                count += 1
                var h: UInt64 = 0xcbf2_9ce4_8422_2325
                func mix(_ b: UInt8) { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
                for b in key.utf8 { mix(b) }
                for v in [e.stamp.wallMs, UInt64(e.stamp.logical), e.stamp.node] { for k in 0..<8 { mix(UInt8(v >> (k * 8) & 0xFF)) } }
                for b in e.value ?? [] { mix(b) }
                mix(e.value == nil ? 0 : 1)
                hash ^= h  // order-independent
            }
            d[name] = StoreDigest(count: count, hash: hash)
        }
        return d
    }

    /// What a peer with `digest` may lack: every store whose fingerprint differs, whole, in
    /// deltas of at most `maxEntries` entries each.
    public func missing(for digest: ReplicationDigest, nowMs: UInt64, maxEntries: Int = 128) -> [ReplicationDelta] {
        let mine = self.digest(nowMs: nowMs)
        var out: [ReplicationDelta] = []
        for (name, store) in stores.sorted(by: { $0.key < $1.key }) where mine[name] != digest[name] && mine[name]?.count ?? 0 > 0 {
            let entries = store.entries.filter { isCurrent($0.value, nowMs: nowMs) }
                .sorted { $0.value.stamp < $1.value.stamp }
                .map { ReplicationDelta.Entry(key: $0.key, value: $0.value.value, stamp: $0.value.stamp) }
            var i = 0
            while i < entries.count {
                out.append(ReplicationDelta(store: name, entries: Array(entries[i..<min(i + maxEntries, entries.count)])))
                i += maxEntries
            }
        }
        return out
    }

    /// Drops tombstones past the horizon; returns how many went.
    @discardableResult
    public mutating func collectTombstones(nowMs: UInt64) -> Int {
        guard nowMs > tombstoneHorizonMs else { return 0 }
        let cutoff = HLCStamp(wallMs: nowMs - tombstoneHorizonMs, logical: 0, node: 0)
        var collected = 0
        for name in stores.keys {
            let before = stores[name]!.tombstoneCount
            stores[name]!.collect(before: cutoff)
            collected += before - stores[name]!.tombstoneCount
        }
        return collected
    }

    /// Applies a delta from a peer, ignoring tombstones already past the horizon.
    public mutating func applyCurrent(_ delta: ReplicationDelta, physicalMs: UInt64) -> [ReplicationDelta.Entry] {
        var d = delta
        d.entries.removeAll { $0.value == nil && $0.stamp.wallMs + tombstoneHorizonMs <= physicalMs }
        return apply(d, physicalMs: physicalMs)
    }
}
