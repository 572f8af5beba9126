/// One entry of a tree summary: an owner holds `path` (from the root), last used at `lastUse`.
public struct TreeUpdate<Element: Hashable & Sendable, OwnerID: Hashable & Sendable>: Sendable, Equatable {
    public var owner: OwnerID
    public var path: [Element]
    public var lastUse: UInt64
    public init(owner: OwnerID, path: [Element], lastUse: UInt64) {
        self.owner = owner
        self.path = path
        self.lastUse = lastUse
    }
}

/// What changed in a tree between two versions, or (when the log no longer reaches back that
/// far) its whole content. The mesh ships these between routers; importing one is an insert
/// of each path that is not logged again, so summaries never echo back.
public struct TreeDelta<Element: Hashable & Sendable, OwnerID: Hashable & Sendable>: Sendable, Equatable {
    public var fromVersion: UInt64
    public var toVersion: UInt64
    /// True when `updates` is the whole tree rather than the changes since `fromVersion`.
    public var isFull: Bool
    public var updates: [TreeUpdate<Element, OwnerID>]

    public init(fromVersion: UInt64, toVersion: UInt64, isFull: Bool, updates: [TreeUpdate<Element, OwnerID>]) {
        self.fromVersion = fromVersion
        self.toVersion = toVersion
        self.isFull = isFull
        self.updates = updates
    }

    /// Elements carried, a measure of the summary's size.
    public var elementCount: Int { updates.reduce(0) { $0 + $1.path.count } }
}

extension RadixTree {
    /// The bounded log of local inserts behind `changes(since:)`.
    struct ChangeLog: Sendable {
        struct Entry: Sendable {
            var version: UInt64
            var owner: Owner
            var key: [Element]
            var lastUse: UInt64
        }

        private(set) var entries: [Entry] = []
        private var head = 0
        private var elements = 0
        /// Log capacity in elements: at 16 bytes a block, 2^20 elements stand for 16 MiB of prompts.
        var budget = 1 << 20
        /// Log capacity in entries, so many short prompts cannot grow it either.
        var maxEntries = 1 << 16
        /// Off when nothing consumes summaries (no mesh): inserts then cost nothing extra.
        var enabled = true
        /// Every local insert with a version above this is still in the log.
        private(set) var floor: UInt64 = 0

        mutating func append(_ e: Entry) {
            guard enabled else {
                floor = e.version
                return
            }
            entries.append(e)
            elements += e.key.count
            while elements > budget || entries.count - head > maxEntries, head < entries.count - 1 {
                floor = entries[head].version
                elements -= entries[head].key.count
                entries[head].key = []
                head += 1
            }
            if head > 1024, head * 2 > entries.count {
                entries.removeFirst(head)
                head = 0
            }
        }

        /// Entries still held (the trimmed ones before `head` are only awaiting compaction).
        var count: Int { entries.count - head }

        mutating func drop(owner: Owner) {
            entries = entries[head...].filter { $0.owner != owner }
            head = 0
            elements = entries.reduce(0) { $0 + $1.key.count }
        }

        func since(_ version: UInt64) -> ArraySlice<Entry> {
            var lo = head, hi = entries.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if entries[mid].version <= version { lo = mid + 1 } else { hi = mid }
            }
            return entries[lo...]
        }
    }

    /// The local changes after `version`, newest use per (owner, path); the whole tree when
    /// the log has been trimmed past `version`.
    public func changes(since version: UInt64) -> TreeDelta<Element, Owner> {
        if version >= changeLog.floor {
            var seen = Set<EntryKey>()
            var updates: [TreeUpdate<Element, Owner>] = []
            for e in changeLog.since(version).reversed() where seen.insert(EntryKey(owner: e.owner, key: e.key)).inserted {
                updates.append(TreeUpdate(owner: e.owner, path: e.key, lastUse: e.lastUse))
            }
            return TreeDelta(fromVersion: version, toVersion: self.version, isFull: false, updates: updates.reversed())
        }
        let all = ownerLeaves().map { TreeUpdate<Element, Owner>(owner: $0.owner, path: $0.path, lastUse: $0.lastUse) }
        return TreeDelta(fromVersion: version, toVersion: self.version, isFull: true, updates: all)
    }

    private struct EntryKey: Hashable {
        var owner: Owner
        var key: [Element]
    }

    /// Imports a summary made elsewhere (owners already translated to this tree's slots).
    public mutating func apply(_ delta: TreeDelta<Element, Owner>) {
        for u in delta.updates { insert(u.path, owner: u.owner, now: u.lastUse, local: false) }
    }
}
