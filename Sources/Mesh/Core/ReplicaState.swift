import Primitives

/// One replicated register: a key of a named store, its value (nil: deleted), the HLC stamp
/// that orders it against other writes of the key, and the dot that names the write.
public struct ReplicatedEntry: Sendable, Equatable {
    public var store: String
    public var key: String
    public var value: [UInt8]?
    public var stamp: HLCStamp
    public var dot: Dot
    /// For a deletion: everything the deleting replica had seen. The tombstone is forgotten only
    /// once every live member has seen all of it, so no live member still holds (or can still
    /// be sent) a value the deletion meant to remove.
    public var seen: VersionVector?

    public init(store: String, key: String, value: [UInt8]?, stamp: HLCStamp, dot: Dot, seen: VersionVector? = nil) {
        self.store = store
        self.key = key
        self.value = value
        self.stamp = stamp
        self.dot = dot
        self.seen = seen
    }

    public var isTombstone: Bool { value == nil }

    /// Last writer wins; equal stamps are the same write.
    func wins(over other: ReplicatedEntry) -> Bool { stamp > other.stamp }
}

/// Named last-writer-wins stores with a causal context: the state of one replica, and a CRDT.
///
/// The context is what makes deletions cheap to forget. An entry that one replica holds and
/// another does not is *new* to the other if the other's context does not cover its dot, and
/// *gone* (deleted, tombstone since collected) if it does. So the full join below never
/// resurrects a deletion, whatever the tombstone's age, and two replicas that exchanged full
/// states hold the same entries.
public struct ReplicaState: CRDT {
    public private(set) var stores: [String: [String: ReplicatedEntry]] = [:]
    public private(set) var context = CausalContext()
    /// Live (non-deleted) entries and an order-independent hash of them, kept as entries
    /// change: two replicas with the same vector but different fingerprints have diverged and
    /// exchange full states.
    public private(set) var liveCount: UInt64 = 0
    public private(set) var fingerprint: UInt64 = 0
    /// Keys of tombstones, for collection without scanning every store.
    private(set) var tombstones: Set<Location> = []

    struct Location: Hashable {
        var store: String
        var key: String
    }

    public init() {}

    public func entry(_ store: String, _ key: String) -> ReplicatedEntry? { stores[store]?[key] }

    /// Live keys and values of a store.
    public func values(of store: String) -> [String: [UInt8]] {
        (stores[store] ?? [:]).compactMapValues(\.value)
    }

    public var tombstoneCount: Int { tombstones.count }
    public var entryCount: Int { stores.values.reduce(0) { $0 + $1.count } }

    /// Applies one write seen for the first time or again. Returns whether the value of the key
    /// changed here. A write whose dot the context covers was seen before (or deleted since).
    @discardableResult
    public mutating func apply(_ e: ReplicatedEntry) -> Bool {
        guard !context.covers(e.dot) else { return false }
        context.add(e.dot)
        if let mine = stores[e.store]?[e.key], !e.wins(over: mine) { return false }
        put(e)
        return true
    }

    /// Takes in a peer's complete answer: every entry it holds that this replica's vector did
    /// not cover, and the peer's vector, which then holds here too.
    public mutating func absorb(_ entries: [ReplicatedEntry], through vector: VersionVector) -> [ReplicatedEntry] {
        var changed: [ReplicatedEntry] = []
        for e in entries where apply(e) { changed.append(e) }
        context.merge(vector)
        return changed
    }

    /// Every entry whose dot `vector` does not cover: what a peer with that vector lacks.
    public func entries(notCoveredBy vector: VersionVector) -> [ReplicatedEntry] {
        var out: [ReplicatedEntry] = []
        for store in stores.values {
            for e in store.values where !vector.covers(e.dot) { out.append(e) }
        }
        return out.sorted { $0.dot < $1.dot }
    }

    /// All entries, for a full-state exchange.
    public var allEntries: [ReplicatedEntry] { entries(notCoveredBy: VersionVector()) }

    /// The full join with another replica's state. Returns the locations whose value changed
    /// here, each with its new entry (nil: the key is gone).
    @discardableResult
    public mutating func merge(entries theirs: [ReplicatedEntry], context theirContext: CausalContext) -> [(store: String, key: String, entry: ReplicatedEntry?)] {
        var changed: [(String, String, ReplicatedEntry?)] = []
        var theirKeys: Set<Location> = []
        for e in theirs {
            theirKeys.insert(Location(store: e.store, key: e.key))
            if let mine = stores[e.store]?[e.key] {
                if e.wins(over: mine) { put(e); changed.append((e.store, e.key, e)) }
            } else if !context.covers(e.dot) {
                put(e)
                changed.append((e.store, e.key, e))
            }
        }
        // Entries only we hold, whose write the other side saw: deleted there since.
        var gone: [Location] = []
        for (name, store) in stores {
            for (key, e) in store where theirContext.covers(e.dot) && !theirKeys.contains(Location(store: name, key: key)) {
                gone.append(Location(store: name, key: key))
            }
        }
        for l in gone {
            let wasLive = stores[l.store]?[l.key]?.value != nil
            remove(l)
            if wasLive { changed.append((l.store, l.key, nil)) }
        }
        context.merge(theirContext)
        return changed
    }

    public mutating func merge(_ other: ReplicaState) {
        merge(entries: other.allEntries, context: other.context)
    }

    /// Forgets the tombstones that every one of `contexts` (the live members') has seen, with
    /// all they deleted. Writes of origins retired here count as seen by every live member
    /// (retirement waited for exactly that). Returns how many went.
    @discardableResult
    public mutating func collectTombstones(seenBy contexts: [CausalContext]) -> Int {
        let frontier = VersionVector.meet(contexts.map(\.vector))
        var collected = 0
        for l in tombstones {
            guard let t = stores[l.store]?[l.key],
                  (t.seen ?? VersionVector()).counters.allSatisfy({ frontier[$0.key] >= $0.value || context.retired[$0.key, default: 0] >= $0.value }),
                  context.retired[t.dot.origin, default: 0] >= t.dot.seq || contexts.allSatisfy({ $0.covers(t.dot) }) else { continue }
            remove(l)
            collected += 1
        }
        return collected
    }

    /// Retires `origin` at `seq` (see `CausalContext`), and drops it from the tombstones'
    /// seen-vectors where the floor covers it, so those are bounded by live origins too.
    public mutating func retire(_ origin: UInt64, at seq: UInt64) {
        context.retire(origin, at: seq)
        guard context.retired[origin] == seq else { return }
        for l in tombstones {
            guard var t = stores[l.store]?[l.key], let seen = t.seen, seen[origin] > 0, seen[origin] <= seq else { continue }
            var trimmed = seen
            trimmed[origin] = 0
            t.seen = trimmed
            stores[l.store]![l.key] = t
        }
    }

    /// Records a write made here: its dot is the context's next for `origin`.
    mutating func record(_ e: ReplicatedEntry) {
        context.add(e.dot)
        put(e)
    }

    // MARK: bookkeeping

    private mutating func put(_ e: ReplicatedEntry) {
        let l = Location(store: e.store, key: e.key)
        if let old = stores[e.store]?[e.key] { forget(old) }
        stores[e.store, default: [:]][e.key] = e
        if e.isTombstone { tombstones.insert(l) } else {
            liveCount += 1
            fingerprint ^= Self.hash(e)
        }
    }

    private mutating func remove(_ l: Location) {
        guard let old = stores[l.store]?[l.key] else { return }
        forget(old)
        stores[l.store]![l.key] = nil
        if stores[l.store]!.isEmpty { stores[l.store] = nil }
    }

    private mutating func forget(_ old: ReplicatedEntry) {
        if old.isTombstone { tombstones.remove(Location(store: old.store, key: old.key)) } else {
            liveCount -= 1
            fingerprint ^= Self.hash(old)
        }
    }

    /// FNV-1a over store, key and dot (a dot names one write, value included), then a final mix
    /// so that XOR-ing many of them stays well spread.
    static func hash(_ e: ReplicatedEntry) -> UInt64 {
        var f = FNV1a()
        f.add(e.store.utf8)
        f.add(UInt8(0xFF))
        f.add(e.key.utf8)
        f.add(e.dot.origin)
        f.add(e.dot.seq)
        var h = f.value
        h ^= h >> 33; h &*= 0xff51_afd7_ed55_8ccd; h ^= h >> 33
        return h
    }

    public static func == (a: ReplicaState, b: ReplicaState) -> Bool {
        a.stores == b.stores && a.context == b.context
    }
}
