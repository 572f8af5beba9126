import Primitives

/// The approximate radix tree of cache-aware routing: which workers were last sent which
/// prefixes, and when. "Approximate" because it records what the router sent, not what the
/// workers' KV caches hold; least recently used entries are evicted per worker to a size bound.
///
/// Generic over the element: the HTTP path uses hashes of fixed-size blocks of prompt bytes
/// (`PromptBlocks`), token ids can be used directly later. Owners are small integer slots; the
/// policy maps them to worker ids.
///
/// Storage is an arena: nodes in one array, all edge labels in one append-only element array
/// (a node's label is a range of it, so splitting an edge copies nothing), and one dictionary
/// from (parent, first element) to child for O(1) steps. Time is an argument (`now`), never read.
public struct RadixTree<Element: Hashable & Sendable>: Sendable {
    public typealias Owner = UInt16

    struct Stamp: Sendable {
        var owner: Owner
        var lastUse: UInt64
        /// The tree version of this owner's last local insert through this node (for export).
        var version: UInt64
    }

    struct Node: Sendable {
        var parent: Int32
        var start: Int32
        var count: Int32
        var children: [Int32] = []
        var stamps: [Stamp] = []
        var alive = true
    }

    struct EdgeKey: Hashable, Sendable {
        var parent: Int32
        var first: Element
    }

    private(set) var nodes: [Node] = [Node(parent: -1, start: 0, count: 0)]
    private(set) var labels: [Element] = []
    private(set) var edges: [EdgeKey: Int32] = [:]
    private var freeNodes: [Int32] = []
    /// Label elements no longer referenced by a live node (reclaimed by `compact()`).
    private var garbage = 0
    /// Elements held per owner: the sum of the label lengths of the nodes it is stamped on.
    public private(set) var ownerSizes: [Int] = []
    /// Elements `owner` holds (0 for an owner never seen).
    public func size(of owner: Owner) -> Int { Int(owner) < ownerSizes.count ? ownerSizes[Int(owner)] : 0 }

    /// Elements in all live labels.
    public private(set) var size = 0
    /// Bumped by every local insert.
    public private(set) var version: UInt64 = 0
    var changeLog = ChangeLog()

    public init(recordingChanges: Bool = true) {
        changeLog.enabled = recordingChanges
    }

    public var nodeCount: Int { nodes.count - freeNodes.count }

    // MARK: matching

    /// The longest prefix of `key` that some eligible owner holds, and those owners.
    public func match(_ key: [Element], eligible: (Owner) -> Bool) -> (length: Int, owners: [Owner]) {
        var node: Int32 = 0
        var i = 0
        var best: (length: Int, node: Int32) = (0, 0)
        while i < key.count, let child = edges[EdgeKey(parent: node, first: key[i])] {
            let c = nodes[Int(child)]
            var m = 1
            let limit = min(Int(c.count), key.count - i)
            while m < limit, labels[Int(c.start) + m] == key[i + m] { m += 1 }
            i += m
            if c.stamps.contains(where: { eligible($0.owner) }) { best = (i, child) }
            if m < Int(c.count) { break }
            node = child
        }
        guard best.node != 0 else { return (0, []) }
        var owners: [Owner] = []
        for s in nodes[Int(best.node)].stamps where eligible(s.owner) { owners.append(s.owner) }
        return (best.length, owners)
    }

    // MARK: inserting

    /// Records that `owner` was sent `key` at `now`. Local inserts are logged for export;
    /// imported ones are not (each router exports only what it decided itself).
    public mutating func insert(_ key: [Element], owner: Owner, now: UInt64, local: Bool = true) {
        guard !key.isEmpty else { return }
        if Int(owner) >= ownerSizes.count { ownerSizes += Array(repeating: 0, count: Int(owner) + 1 - ownerSizes.count) }
        if local {
            version += 1
            changeLog.append(ChangeLog.Entry(version: version, owner: owner, key: key, lastUse: now))
        }
        let stampVersion = local ? version : 0
        var node: Int32 = 0
        var i = 0
        while i < key.count {
            guard let child = edges[EdgeKey(parent: node, first: key[i])] else {
                let leaf = newNode(parent: node, label: key[i...])
                stamp(leaf, owner, now, stampVersion)
                return
            }
            let c = nodes[Int(child)]
            var m = 1
            let limit = min(Int(c.count), key.count - i)
            while m < limit, labels[Int(c.start) + m] == key[i + m] { m += 1 }
            if m < Int(c.count) { split(child, at: m) }
            stamp(child, owner, now, stampVersion)
            i += m
            node = child
        }
    }

    private mutating func newNode(parent: Int32, label: ArraySlice<Element>) -> Int32 {
        let start = Int32(labels.count)
        labels.append(contentsOf: label)
        let index = store(Node(parent: parent, start: start, count: Int32(label.count)))
        nodes[Int(parent)].children.append(index)
        edges[EdgeKey(parent: parent, first: label.first!)] = index
        size += label.count
        return index
    }

    /// Puts a node in a free slot (one a deleted node left) or at the end; returns its index.
    private mutating func store(_ node: Node) -> Int32 {
        if let reused = freeNodes.popLast() {
            nodes[Int(reused)] = node
            return reused
        }
        nodes.append(node)
        return Int32(nodes.count - 1)
    }

    /// Cuts `node`'s label after `at` elements; the tail becomes its only child, keeping the
    /// node's children and owners.
    private mutating func split(_ node: Int32, at: Int) {
        let n = nodes[Int(node)]
        var tail = Node(parent: node, start: n.start + Int32(at), count: n.count - Int32(at))
        tail.children = n.children
        tail.stamps = n.stamps
        let index = store(tail)
        for child in n.children {
            nodes[Int(child)].parent = index
            let first = labels[Int(nodes[Int(child)].start)]
            edges[EdgeKey(parent: node, first: first)] = nil
            edges[EdgeKey(parent: index, first: first)] = child
        }
        nodes[Int(node)].count = Int32(at)
        nodes[Int(node)].children = [index]
        edges[EdgeKey(parent: node, first: labels[Int(tail.start)])] = index
        // Owner sizes are unchanged: the same owners hold both halves.
    }

    private mutating func stamp(_ node: Int32, _ owner: Owner, _ now: UInt64, _ stampVersion: UInt64) {
        if let k = nodes[Int(node)].stamps.firstIndex(where: { $0.owner == owner }) {
            nodes[Int(node)].stamps[k].lastUse = max(nodes[Int(node)].stamps[k].lastUse, now)
            nodes[Int(node)].stamps[k].version = max(nodes[Int(node)].stamps[k].version, stampVersion)
        } else {
            nodes[Int(node)].stamps.append(Stamp(owner: owner, lastUse: now, version: stampVersion))
            ownerSizes[Int(owner)] += Int(nodes[Int(node)].count)
        }
    }

    // MARK: eviction and removal

    /// Evicts each owner's least recently used leaves until it holds at most `maxSize` elements.
    public mutating func evict(maxSize: Int) {
        let over = ownerSizes.indices.filter { ownerSizes[$0] > maxSize }
        guard !over.isEmpty else { return }
        // One pass over the nodes finds every over-bound owner's leaves.
        var leaves = [[Aged]](repeating: [], count: ownerSizes.count)
        var isOver = [Bool](repeating: false, count: ownerSizes.count)
        for o in over { isOver[o] = true }
        for i in nodes.indices where i != 0 && nodes[i].alive {
            for s in nodes[i].stamps where isOver[Int(s.owner)] && isOwnerLeaf(Int32(i), s.owner) {
                leaves[Int(s.owner)].append(Aged(lastUse: s.lastUse, node: Int32(i)))
            }
        }
        for o in over { evict(owner: Owner(o), leaves: leaves[o], to: maxSize) }
        compactIfWorthIt()
    }

    func holds(_ node: Int32, _ owner: Owner) -> Bool {
        nodes[Int(node)].stamps.contains { $0.owner == owner }
    }

    /// A node is one of the owner's leaves when it holds the owner and none of its children does.
    func isOwnerLeaf(_ node: Int32, _ owner: Owner) -> Bool {
        node != 0 && holds(node, owner) && !nodes[Int(node)].children.contains { holds($0, owner) }
    }

    private struct Aged: Comparable {
        var lastUse: UInt64
        var node: Int32
        static func < (a: Aged, b: Aged) -> Bool { (a.lastUse, a.node) < (b.lastUse, b.node) }
    }

    private mutating func evict(owner: Owner, leaves: [Aged], to maxSize: Int) {
        var heap = MinHeap(leaves)
        while ownerSizes[Int(owner)] > maxSize, let oldest = heap.pop() {
            let parent = nodes[Int(oldest.node)].parent
            unstamp(oldest.node, owner)
            if parent > 0, isOwnerLeaf(parent, owner) {
                heap.push(Aged(lastUse: nodes[Int(parent)].stamps.first { $0.owner == owner }!.lastUse, node: parent))
            }
        }
    }

    /// Takes `owner` off `node`, deleting the node (and ownerless ancestors) when nothing is left.
    private mutating func unstamp(_ node: Int32, _ owner: Owner) {
        guard let k = nodes[Int(node)].stamps.firstIndex(where: { $0.owner == owner }) else { return }
        nodes[Int(node)].stamps.remove(at: k)
        ownerSizes[Int(owner)] -= Int(nodes[Int(node)].count)
        var n = node
        while n != 0, nodes[Int(n)].stamps.isEmpty, nodes[Int(n)].children.isEmpty {
            let parent = nodes[Int(n)].parent
            delete(n)
            n = parent
        }
    }

    private mutating func delete(_ node: Int32) {
        let n = nodes[Int(node)]
        edges[EdgeKey(parent: n.parent, first: labels[Int(n.start)])] = nil
        nodes[Int(n.parent)].children.removeAll { $0 == node }
        size -= Int(n.count)
        garbage += Int(n.count)
        nodes[Int(node)] = Node(parent: -1, start: 0, count: 0, alive: false)
        freeNodes.append(node)
    }

    /// Forgets an owner entirely (a removed worker).
    public mutating func remove(owner: Owner) {
        guard Int(owner) < ownerSizes.count else { return }
        // Children before parents, so emptied parents are deleted on the way up.
        var order: [Int32] = []
        var stack: [Int32] = [0]
        while let n = stack.popLast() {
            order.append(n)
            stack.append(contentsOf: nodes[Int(n)].children)
        }
        for n in order.reversed() where n != 0 && nodes[Int(n)].alive { unstamp(n, owner) }
        ownerSizes[Int(owner)] = 0
        changeLog.drop(owner: owner)
        compactIfWorthIt()
    }

    /// Rewrites the label array without the garbage of deleted nodes, once it is most of it.
    private mutating func compactIfWorthIt() {
        guard garbage > 4096, garbage * 2 > labels.count else { return }
        var fresh: [Element] = []
        fresh.reserveCapacity(size)
        for i in nodes.indices where nodes[i].alive && i != 0 {
            let start = Int(nodes[i].start), count = Int(nodes[i].count)
            nodes[i].start = Int32(fresh.count)
            fresh.append(contentsOf: labels[start..<(start + count)])
        }
        labels = fresh
        garbage = 0
    }

    // MARK: inspection (tests, export)

    /// The full label path from the root to `node`.
    func path(to node: Int32) -> [Element] {
        var parts: [ArraySlice<Element>] = []
        var n = node
        while n > 0 {
            let s = Int(nodes[Int(n)].start), c = Int(nodes[Int(n)].count)
            parts.append(labels[s..<(s + c)])
            n = nodes[Int(n)].parent
        }
        return parts.reversed().flatMap { $0 }
    }

    /// Every (owner, full path, last use) whose node is one of the owner's leaves: the whole
    /// content of the tree in its most compact form.
    func ownerLeaves() -> [(owner: Owner, path: [Element], lastUse: UInt64)] {
        var out: [(Owner, [Element], UInt64)] = []
        for i in nodes.indices where i != 0 && nodes[i].alive {
            for s in nodes[i].stamps where isOwnerLeaf(Int32(i), s.owner) {
                out.append((s.owner, path(to: Int32(i)), s.lastUse))
            }
        }
        return out
    }

    /// Bytes held by the tree's arrays (labels, nodes, edges), approximately.
    public var approximateBytes: Int {
        labels.capacity * MemoryLayout<Element>.stride
            + nodes.capacity * MemoryLayout<Node>.stride
            + nodes.reduce(0) { $0 + $1.children.capacity * 4 + $1.stamps.capacity * MemoryLayout<Stamp>.stride + ($1.children.isEmpty ? 0 : 32) + ($1.stamps.isEmpty ? 0 : 32) }
            + edges.capacity * (MemoryLayout<EdgeKey>.stride + 4 + 1)
    }
}
