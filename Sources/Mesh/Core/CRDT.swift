/// A state-based CRDT: `merge` is commutative, associative and idempotent, so replicas that
/// have seen the same updates, in any order and any number of times, are equal.
public protocol CRDT: Sendable, Equatable {
    mutating func merge(_ other: Self)
}

/// A last-writer-wins map with tombstones: each key holds the value (or the deletion) with the
/// highest HLC stamp. Deltas are maps of just the changed keys, merged the same way.
/// Tombstones are kept until `collect(before:)` says every live member has seen them.
public struct LWWMap<Key: Hashable & Sendable, Value: Equatable & Sendable>: CRDT {
    public struct Entry: Sendable, Equatable {
        public var value: Value?
        public var stamp: HLCStamp
        public var isTombstone: Bool { value == nil }
    }

    public private(set) var entries: [Key: Entry] = [:]

    public init() {}

    public subscript(key: Key) -> Value? { entries[key]?.value }

    /// Live keys and values.
    public var values: [Key: Value] { entries.compactMapValues(\.value) }

    /// Sets (or, with nil, deletes) a key at `stamp`; returns the one-entry delta to ship.
    @discardableResult
    public mutating func set(_ key: Key, _ value: Value?, stamp: HLCStamp) -> LWWMap {
        var delta = LWWMap()
        let entry = Entry(value: value, stamp: stamp)
        delta.entries[key] = entry
        merge(delta)
        return delta
    }

    public mutating func merge(_ other: LWWMap) {
        for (key, theirs) in other.entries {
            if let mine = entries[key], mine.stamp >= theirs.stamp {
                // Equal stamps come from the same write: identical entries, nothing to do.
                continue
            }
            entries[key] = theirs
        }
    }

    /// Entries changed after `stamp` (a delta for a peer that has seen everything up to it).
    public func changes(after stamp: HLCStamp) -> LWWMap {
        var delta = LWWMap()
        delta.entries = entries.filter { $0.value.stamp > stamp }
        return delta
    }

    /// Drops tombstones older than `stamp` (every live member has acknowledged them).
    public mutating func collect(before stamp: HLCStamp) {
        entries = entries.filter { !$0.value.isTombstone || $0.value.stamp >= stamp }
    }

    public var tombstoneCount: Int { entries.values.filter(\.isTombstone).count }
}

/// A positive-negative counter: per node, a grow-only count of increments and of decrements.
/// Rate-limit usage across routers: each router adds to its own slot, the sum is the cluster's.
public struct PNCounter: CRDT {
    public private(set) var increments: [UInt64: UInt64] = [:]
    public private(set) var decrements: [UInt64: UInt64] = [:]

    public init() {}

    public var value: Int64 {
        Int64(bitPattern: increments.values.reduce(0, &+)) &- Int64(bitPattern: decrements.values.reduce(0, &+))
    }

    public mutating func increment(node: UInt64, by n: UInt64 = 1) { increments[node, default: 0] &+= n }
    public mutating func decrement(node: UInt64, by n: UInt64 = 1) { decrements[node, default: 0] &+= n }

    public mutating func merge(_ other: PNCounter) {
        for (n, v) in other.increments { increments[n] = max(increments[n] ?? 0, v) }
        for (n, v) in other.decrements { decrements[n] = max(decrements[n] ?? 0, v) }
    }
}
