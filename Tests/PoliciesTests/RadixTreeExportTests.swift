import Primitives
@testable import Policies
import Testing

/// The chunked whole-tree export a joining router is sent: complete, each label once, bounded
/// chunks, and sound when the tree changes between chunks.
@Suite struct RadixTreeExportTests {
    typealias Tree = RadixTree<UInt8>
    typealias Chunk = TreeChunk<UInt8, Tree.Owner>

    /// A tree of conversations: a few shared system prompts, turns that extend each other.
    static func conversations(seed: UInt64, count: Int, owners: Int = 3) -> (Tree, [(key: [UInt8], owner: Tree.Owner)]) {
        var rng = SplitMix64(seed: seed)
        var t = Tree()
        var inserted: [(key: [UInt8], owner: Tree.Owner)] = []
        let systems = (0..<4).map { s in Array("system prompt \(s): be helpful. ".utf8) }
        for step in 0..<count {
            var key = systems.randomElement(using: &rng)!
            for _ in 0...Int.random(in: 0...3, using: &rng) { key += Array("turn \(Int.random(in: 0..<6, using: &rng)); ".utf8) }
            let owner = Tree.Owner.random(in: 0..<Tree.Owner(owners), using: &rng)
            t.insert(key, owner: owner, now: UInt64(step))
            inserted.append((key, owner))
        }
        return (t, inserted)
    }

    /// Exports everything, chunks of at most `nodesPerChunk` nodes, applying `between` after each.
    static func exportAll(_ t: inout Tree, nodesPerChunk: Int, maxPathLength: Int = 10_000,
                          between: (inout Tree, Int) -> Void = { _, _ in }) -> [Chunk] {
        var cursor = TreeExportCursor<UInt8>()
        var chunks: [Chunk] = []
        while !cursor.isFinished {
            var chunk = Chunk(ancestors: [], nodes: [])
            _ = t.exportChunk(after: &cursor, maxPathLength: maxPathLength, begin: { ancestors in
                chunk = Chunk(ancestors: ancestors.map(Array.init), nodes: [])
                return true
            }, accept: { depth, label, owners in
                guard chunk.nodes.count < nodesPerChunk else { return false }
                chunk.nodes.append(ExportedTreeNode(depth: depth, label: Array(label), owners: owners))
                return true
            })
            if !chunk.nodes.isEmpty { chunks.append(chunk) }
            between(&t, chunks.count)
            #expect(chunks.count < 100_000, "the export ends")
        }
        return chunks
    }

    static func content(_ t: Tree) -> Set<String> {
        Set(t.ownerLeaves().map { "\($0.owner) \($0.path) \($0.lastUse)" })
    }

    @Test func chunksRebuildTheWholeTreeInAnyOrder() {
        var (t, _) = Self.conversations(seed: 1, count: 600)
        for perChunk in [1, 3, 50, 100_000] {
            let chunks = Self.exportAll(&t, nodesPerChunk: perChunk)
            var copy = Tree(), reversed = Tree()
            #expect(chunks.allSatisfy { copy.apply($0) } && chunks.reversed().allSatisfy { reversed.apply($0) })
            #expect(Self.content(copy) == Self.content(t), "\(perChunk) nodes per chunk")
            #expect(Self.content(reversed) == Self.content(t), "chunks are self-contained")
            #expect(copy.size == t.size && copy.ownerSizes == t.ownerSizes)
            // Each node's label travels once; only a chunk's ancestors repeat what came before.
            #expect(chunks.reduce(0) { $0 + $1.nodes.reduce(0) { $0 + $1.label.count } } == t.size)
            #expect(chunks.reduce(0) { $0 + $1.nodes.count } == t.nodeCount - 1)
        }
    }

    @Test func sharedPrefixesAreSentOnceNotOncePerPrompt() {
        let system = Array(String(repeating: "a long shared system prompt. ", count: 20).utf8)
        var t = Tree()
        for i in 0..<200 { t.insert(system + Array("question \(i)".utf8), owner: Tree.Owner(i % 2), now: UInt64(i)) }
        let chunks = Self.exportAll(&t, nodesPerChunk: 40)
        let sent = chunks.reduce(0) { $0 + $1.nodes.reduce(0) { $0 + $1.label.count } + $1.ancestors.reduce(0) { $0 + $1.count } }
        let fullPaths = t.ownerLeaves().reduce(0) { $0 + $1.path.count }
        #expect(sent * 8 < fullPaths, "\(sent) elements sent where full paths would be \(fullPaths)")
    }

    @Test func aTreeChangingBetweenChunksYieldsOnlyRealPathsAndEverythingThatStayed() {
        var (t, inserted) = Self.conversations(seed: 2, count: 400)
        let before = t.ownerLeaves()
        var rng = SplitMix64(seed: 3)
        var added: [(key: [UInt8], owner: Tree.Owner)] = []
        var evicted = false
        let chunks = Self.exportAll(&t, nodesPerChunk: 7) { tree, n in
            // New prompts (some splitting existing labels), and once an eviction of most entries.
            let extra = Array("system prompt \(Int.random(in: 0..<4, using: &rng)): be \(n) x".utf8)
            let owner = Tree.Owner.random(in: 0..<3, using: &rng)
            tree.insert(extra, owner: owner, now: 10_000 + UInt64(n))
            added.append((extra, owner))
            if n == 20 {
                tree.evict(maxSize: 60)
                evicted = true
            }
        }
        #expect(evicted)
        var copy = Tree()
        #expect(chunks.allSatisfy { copy.apply($0) })
        // Sound: each imported entry is a prefix of something its owner was sent.
        let sources = inserted + added
        for leaf in copy.ownerLeaves() {
            #expect(sources.contains { $0.owner == leaf.owner && $0.key.starts(with: leaf.path) }, "\(leaf.owner) \(leaf.path) was never inserted")
        }
        // Complete for what stayed: every entry present before and after is imported.
        let after = Set(t.ownerLeaves().map { "\($0.owner) \($0.path)" })
        for leaf in before where after.contains("\(leaf.owner) \(leaf.path)") {
            #expect(copy.match(leaf.path, eligible: { $0 == leaf.owner }).length == leaf.path.count, "\(leaf.owner) \(leaf.path) lost")
        }
    }

    @Test func pathsTooLongToShipArePassedOverWithTheirSubtrees() {
        var t = Tree()
        t.insert(Array("short one".utf8), owner: 0, now: 1)
        t.insert(Array(String(repeating: "x", count: 50).utf8), owner: 1, now: 2)
        t.insert(Array(String(repeating: "x", count: 50).utf8) + Array("more".utf8), owner: 0, now: 3)
        t.insert(Array("zz".utf8), owner: 2, now: 4)
        let chunks = Self.exportAll(&t, nodesPerChunk: 1, maxPathLength: 20)
        var copy = Tree()
        for c in chunks { copy.apply(c) }
        #expect(Set(copy.ownerLeaves().map(\.path)) == [Array("short one".utf8), Array("zz".utf8)])
    }

    @Test func aNodeThatFitsNoChunkIsPassedOverAndTheExportGoesOn() {
        var t = Tree()
        for (i, word) in ["alpha", "beta", String(repeating: "g", count: 30), "delta"].enumerated() {
            t.insert(Array(word.utf8), owner: 0, now: UInt64(i))
        }
        var cursor = TreeExportCursor<UInt8>()
        var labels: [String] = []
        while !cursor.isFinished {
            _ = t.exportChunk(after: &cursor, maxPathLength: 100, begin: { _ in true }) { _, label, _ in
                guard label.count < 10 else { return false }
                labels.append(String(decoding: label, as: UTF8.self))
                return true
            }
        }
        #expect(labels == ["alpha", "beta", "delta"])
    }

    @Test func malformedChunksAreRefused() {
        var t = Tree()
        let bad = Chunk(ancestors: [], nodes: [ExportedTreeNode(depth: 2, label: Array("a".utf8), owners: [TreeStamp(owner: 0, lastUse: 1)])])
        let orphan = t.apply(bad)
        #expect(!orphan, "depth 2 without a parent")
        let rootless = t.apply(Chunk(ancestors: [], nodes: [ExportedTreeNode(depth: 0, label: [1], owners: [])]))
        #expect(!rootless)
        #expect(t.size == 0)
    }
}
