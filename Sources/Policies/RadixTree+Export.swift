/// Where a chunked export of a tree stands between chunks.
///
/// Nodes are exported in the lexicographic order of their paths (a preorder walk that visits
/// children by first element), so the position is simply the path of the last node exported:
/// the next chunk starts at the first node whose path comes after it, whatever was inserted,
/// split or evicted in between. No node index is trusted across chunks. Nodes added behind the
/// position after the export started are not sent: they are new decisions, which reach the
/// other router as they are made. The sorted child lists of the nodes on the way down are kept
/// as a cache, so a node with a hundred thousand children is sorted once, not once per chunk.
public struct TreeExportCursor<Element: Hashable & Sendable>: Sendable {
    /// The path of the last node exported (nil: none yet).
    var path: [Element]?
    /// The last node's subtree was passed over whole (its path was too long to ship).
    var pastSubtree = false
    /// Sorted first elements of the children of the nodes on the current way down, by depth.
    var sortedChildren: [(node: Int32, firsts: [Element])] = []
    /// The export has visited every node.
    public private(set) var isFinished = false

    public init() {}

    mutating func finish() {
        isFinished = true
        sortedChildren = []
    }
}

/// One node of an exported chunk: its label below its parent and the owners whose deepest
/// entry on this branch it is (the only stamps needed: importing a path stamps every node on it).
public struct ExportedTreeNode<Element: Hashable & Sendable, OwnerID: Hashable & Sendable>: Sendable, Equatable {
    /// 1 for a child of the root; a node's parent is the nearest earlier node (or ancestor of
    /// the chunk) one level up.
    public var depth: Int
    public var label: [Element]
    public var owners: [TreeStamp<OwnerID>]

    public init(depth: Int, label: [Element], owners: [TreeStamp<OwnerID>]) {
        self.depth = depth
        self.label = label
        self.owners = owners
    }
}

public struct TreeStamp<OwnerID: Hashable & Sendable>: Sendable, Equatable {
    public var owner: OwnerID
    public var lastUse: UInt64
    public init(owner: OwnerID, lastUse: UInt64) {
        self.owner = owner
        self.lastUse = lastUse
    }
}

/// A self-contained piece of a tree: the labels of the ancestors of its first node, then nodes in
/// path order. Each node's label is sent once, so prompts sharing a prefix share it on the wire.
/// Chunks can be imported in any order and any subset: each one only adds paths.
public struct TreeChunk<Element: Hashable & Sendable, OwnerID: Hashable & Sendable>: Sendable, Equatable {
    public var ancestors: [[Element]]
    public var nodes: [ExportedTreeNode<Element, OwnerID>]

    public init(ancestors: [[Element]], nodes: [ExportedTreeNode<Element, OwnerID>]) {
        self.ancestors = ancestors
        self.nodes = nodes
    }

    /// Calls `body` with every (owner and last use, full path) the chunk stands for, one path
    /// in memory at a time; false when a depth does not follow from the ones before (a
    /// malformed chunk; the entries before it were delivered).
    public func forEachEntry(_ body: (TreeStamp<OwnerID>, [Element]) -> Void) -> Bool {
        var path: [Element] = []
        var ends: [Int] = []
        for a in ancestors {
            path += a
            ends.append(path.count)
        }
        for n in nodes {
            guard n.depth >= 1, n.depth <= ends.count + 1 else { return false }
            ends.removeSubrange((n.depth - 1)...)
            path.removeSubrange((ends.last ?? 0)...)
            path += n.label
            ends.append(path.count)
            for o in n.owners { body(o, path) }
        }
        return true
    }
}

extension RadixTree where Element: Comparable {
    /// The next chunk of the whole tree after `cursor`, built by handing nodes to `accept` until
    /// it refuses one (the chunk is full; that node starts the next chunk). `begin` (re)starts the
    /// chunk with the labels of its first node's ancestors and may refuse too. A node whose path is longer than
    /// `maxPathLength`, or that does not fit an empty chunk, is passed over with its subtree (a
    /// prompt too long to ship). Returns the number of nodes accepted; the cursor finishes
    /// after the last node.
    public func exportChunk(
        after cursor: inout TreeExportCursor<Element>, maxPathLength: Int,
        begin: (_ ancestors: [ArraySlice<Element>]) -> Bool,
        accept: (_ depth: Int, _ label: ArraySlice<Element>, _ owners: [TreeStamp<Owner>]) -> Bool
    ) -> Int {
        guard !cursor.isFinished else { return 0 }
        var frames = resume(cursor)
        var started = false
        var accepted = 0
        var last: Int32?
        var lastPassedOver = false
        defer {
            if let last {
                cursor.path = path(to: last)
                cursor.pastSubtree = lastPassedOver
            }
            cursor.sortedChildren = frames.map { ($0.node, $0.firsts) }
        }
        while let top = frames.last {
            guard top.next < top.firsts.count else {
                frames.removeLast()
                continue
            }
            frames[frames.count - 1].next += 1
            guard let child = edges[EdgeKey(parent: top.node, first: top.firsts[top.next])] else { continue }  // gone since sorted
            let text = label(of: child)
            let pathLength = top.pathLength + text.count
            if pathLength > maxPathLength {
                (last, lastPassedOver) = (child, true)
                continue
            }
            if !started {
                // Ancestors that fit no chunk: the node is passed over with its subtree.
                guard begin(frames.dropFirst().map { label(of: $0.node) }) else {
                    (last, lastPassedOver) = (child, true)
                    continue
                }
                started = true
            }
            let owners = nodes[Int(child)].stamps.compactMap { s in
                isOwnerLeaf(child, s.owner) ? TreeStamp(owner: s.owner, lastUse: s.lastUse) : nil
            }
            guard accept(frames.count, text, owners) else {
                if accepted == 0 {
                    // Too big for an empty chunk: passed over, and the chunk begins again.
                    (last, lastPassedOver) = (child, true)
                    started = false
                    continue
                }
                frames[frames.count - 1].next -= 1
                return accepted
            }
            accepted += 1
            (last, lastPassedOver) = (child, false)
            frames.append(ExportFrame(node: child, firsts: sortedFirsts(of: child), next: 0, pathLength: pathLength))
        }
        cursor.finish()
        return accepted
    }

    /// One node on the way down: its children's first elements in order, the next to visit.
    private struct ExportFrame {
        var node: Int32
        var firsts: [Element]
        var next: Int
        var pathLength: Int
    }

    private func label(of node: Int32) -> ArraySlice<Element> {
        let n = nodes[Int(node)]
        return labels[Int(n.start)..<Int(n.start + n.count)]
    }

    private func sortedFirsts(of node: Int32) -> [Element] {
        nodes[Int(node)].children.map { labels[Int(nodes[Int($0)].start)] }.sorted()
    }

    /// The walk's state just before the first node whose path comes after the cursor's.
    private func resume(_ cursor: TreeExportCursor<Element>) -> [ExportFrame] {
        func firsts(_ node: Int32, depth: Int) -> [Element] {
            if depth < cursor.sortedChildren.count, cursor.sortedChildren[depth].node == node { return cursor.sortedChildren[depth].firsts }
            return sortedFirsts(of: node)
        }
        var frames = [ExportFrame(node: 0, firsts: firsts(0, depth: 0), next: 0, pathLength: 0)]
        guard let p = cursor.path else { return frames }
        var i = 0
        while i < p.count {
            let f = frames[frames.count - 1]
            // The first child whose first element is not below the path's next one.
            var lo = 0, hi = f.firsts.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if f.firsts[mid] < p[i] { lo = mid + 1 } else { hi = mid }
            }
            frames[frames.count - 1].next = lo
            guard lo < f.firsts.count, f.firsts[lo] == p[i], let child = edges[EdgeKey(parent: f.node, first: p[i])] else { return frames }
            let text = label(of: child)
            var m = 0
            while m < text.count, i + m < p.count, text[text.startIndex + m] == p[i + m] { m += 1 }
            if m == text.count {
                // The child is on the path: continue below it; its later siblings come after.
                frames[frames.count - 1].next = lo + 1
                frames.append(ExportFrame(node: child, firsts: firsts(child, depth: frames.count), next: 0, pathLength: f.pathLength + text.count))
                i += m
            } else {
                // The child parts from the path: it comes after it if the path ended first or
                // the child's element is the greater.
                let childAfter = i + m == p.count || text[text.startIndex + m] > p[i + m]
                if !childAfter { frames[frames.count - 1].next = lo + 1 }
                return frames
            }
        }
        // The path ends at a node: its children come next, unless it was passed over whole.
        if cursor.pastSubtree { frames[frames.count - 1].next = frames[frames.count - 1].firsts.count }
        return frames
    }
}

extension RadixTree {
    /// Imports a chunk made elsewhere (owners already translated to this tree's slots), as
    /// imported entries: never logged, so never sent on. False when the chunk is malformed.
    @discardableResult
    public mutating func apply(_ chunk: TreeChunk<Element, Owner>) -> Bool {
        chunk.forEachEntry { stamp, path in insert(path, owner: stamp.owner, now: stamp.lastUse, local: false) }
    }
}
