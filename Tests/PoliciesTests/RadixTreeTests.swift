import Primitives
@testable import Policies
import Testing

@Suite struct RadixTreeTests {
    typealias Tree = RadixTree<UInt8>
    func k(_ s: String) -> [UInt8] { Array(s.utf8) }
    let all: (Tree.Owner) -> Bool = { _ in true }

    @Test func matchesTheLongestInsertedPrefix() {
        var t = Tree()
        t.insert(k("hello world"), owner: 0, now: 1)
        t.insert(k("hello there"), owner: 1, now: 2)
        #expect(t.match(k("hello world, again"), eligible: all) == (11, [0]))
        #expect(t.match(k("hello there"), eligible: all) == (11, [1]))
        let shared = t.match(k("hello"), eligible: all)
        #expect(shared.length == 5 && Set(shared.owners) == [0, 1])
        #expect(t.match(k("help"), eligible: all).length == 3)
        #expect(t.match(k("xyz"), eligible: all) == (0, []))
        #expect(t.match([], eligible: all) == (0, []))
    }

    @Test func eligibilityFallsBackToAShallowerOwner() {
        var t = Tree()
        t.insert(k("abcdef"), owner: 0, now: 1)
        t.insert(k("abcdefghij"), owner: 1, now: 2)
        #expect(t.match(k("abcdefghij"), eligible: all) == (10, [1]))
        #expect(t.match(k("abcdefghij"), eligible: { $0 != 1 }) == (6, [0]), "owner 1 unavailable: the best the others hold")
        #expect(t.match(k("abcdefghij"), eligible: { _ in false }) == (0, []))
    }

    @Test func sizesCountEachOwnersElements() {
        var t = Tree()
        t.insert(k("abcdef"), owner: 0, now: 1)
        t.insert(k("abcxyz"), owner: 1, now: 1)
        #expect(t.ownerSizes == [6, 6])
        #expect(t.size == 9, "abc is stored once")
        t.insert(k("abcdef"), owner: 0, now: 2)
        #expect(t.ownerSizes[0] == 6, "re-inserting changes nothing but the stamp")
        t.insert([], owner: 0, now: 3)
        #expect(t.size == 9)
    }

    @Test func evictionRemovesLeastRecentlyUsedFirstDownToTheBound() {
        var t = Tree()
        t.insert(k("aaaa1111"), owner: 0, now: 10)
        t.insert(k("bbbb2222"), owner: 0, now: 20)
        t.insert(k("cccc3333"), owner: 0, now: 30)
        t.insert(k("aaaa1111"), owner: 0, now: 40)  // a is now the most recent
        t.evict(maxSize: 16)
        #expect(t.ownerSizes[0] <= 16)
        #expect(t.match(k("aaaa1111"), eligible: all).length == 8)
        #expect(t.match(k("cccc3333"), eligible: all).length == 8)
        #expect(t.match(k("bbbb2222"), eligible: all).length == 0, "the least recently used prompt went first")
        t.evict(maxSize: 0)
        #expect(t.ownerSizes[0] == 0)
        #expect(t.size == 0)
        #expect(t.nodeCount == 1, "only the root is left")
    }

    @Test func evictionIsPerOwnerAndKeepsSharedNodesForOthers() {
        var t = Tree()
        t.insert(k("shared-prefix-A"), owner: 0, now: 1)
        t.insert(k("shared-prefix-B"), owner: 1, now: 2)
        t.evict(maxSize: 0)
        #expect(t.size == 0)
        var u = Tree()
        u.insert(k("shared-prefix-A"), owner: 0, now: 1)
        u.insert(k("shared-prefix-B"), owner: 1, now: 2)
        u.insert(k("zzzzzzzzzzzzzzzzzzzzzzzzz"), owner: 1, now: 3)
        u.evict(maxSize: 20)
        #expect(u.ownerSizes[0] == 15, "owner 0 is under its bound and keeps everything")
        #expect(u.match(k("shared-prefix-A"), eligible: all) == (15, [0]))
    }

    @Test func removingAnOwnerPurgesItsEntries() {
        var t = Tree()
        t.insert(k("system prompt: be nice. user: hi"), owner: 0, now: 1)
        t.insert(k("system prompt: be nice. user: yo"), owner: 1, now: 2)
        t.remove(owner: 0)
        #expect(t.ownerSizes[0] == 0)
        #expect(t.match(k("system prompt: be nice. user: hi"), eligible: all).owners == [1])
        t.remove(owner: 1)
        #expect(t.size == 0 && t.nodeCount == 1)
        t.remove(owner: 7)  // unknown owner: nothing happens
    }

    @Test func randomWorkloadKeepsInvariants() {
        var rng = SplitMix64(seed: 11)
        var t = Tree()
        var inserted: [[UInt8]: Set<Tree.Owner>] = [:]
        let alphabet = Array("abc".utf8)
        for step in 0..<3000 {
            let len = Int.random(in: 1...12, using: &rng)
            let key = (0..<len).map { _ in alphabet.randomElement(using: &rng)! }
            let owner = Tree.Owner.random(in: 0..<4, using: &rng)
            t.insert(key, owner: owner, now: UInt64(step))
            inserted[key, default: []].insert(owner)
        }
        // Every inserted key is fully matched, by exactly the owners of the keys it begins.
        for key in inserted.keys {
            let m = t.match(key, eligible: all)
            #expect(m.length == key.count)
            let expected = inserted.filter { $0.key.starts(with: key) }.values.reduce(into: Set<Tree.Owner>()) { $0.formUnion($1) }
            #expect(Set(m.owners) == expected, "\(key)")
        }
        // Sizes agree with a recount over the nodes.
        var recount = [Int](repeating: 0, count: 4)
        var total = 0
        for n in t.nodes where n.alive {
            total += Int(n.count)
            for s in n.stamps { recount[Int(s.owner)] += Int(n.count) }
        }
        #expect(recount == t.ownerSizes)
        #expect(total == t.size)
        // Eviction to a bound keeps the accounting right and never over the bound.
        t.evict(maxSize: 40)
        #expect(t.ownerSizes.allSatisfy { $0 <= 40 })
        recount = [0, 0, 0, 0]
        for n in t.nodes where n.alive { for s in n.stamps { recount[Int(s.owner)] += Int(n.count) } }
        #expect(recount == t.ownerSizes)
    }

    @Test func compactionKeepsContent() {
        var t = Tree()
        for i in 0..<3000 { t.insert(k("prompt number \(i) with some padding text"), owner: UInt16(i % 2), now: UInt64(i)) }
        t.evict(maxSize: 200)  // deletes most nodes, then compacts the label array
        let survivors = (0..<3000).filter { t.match(k("prompt number \($0) with some padding text"), eligible: all).length == k("prompt number \($0) with some padding text").count }
        #expect(!survivors.isEmpty)
        #expect(survivors.allSatisfy { $0 >= 2500 }, "the newest prompts survive")
    }
}

@Suite struct TreeSummaryTests {
    typealias Tree = RadixTree<UInt64>
    let all: (Tree.Owner) -> Bool = { _ in true }

    @Test func changesSinceAVersionRoundTrip() {
        var a = Tree()
        a.insert([1, 2, 3, 4], owner: 0, now: 100)
        let v1 = a.version
        a.insert([1, 2, 9], owner: 1, now: 200)
        a.insert([5, 6], owner: 0, now: 300)
        a.insert([5, 6], owner: 0, now: 400)
        let delta = a.changes(since: v1)
        #expect(!delta.isFull)
        #expect(delta.fromVersion == v1 && delta.toVersion == a.version)
        #expect(delta.updates.count == 2, "the repeated insert is coalesced")
        #expect(delta.updates.contains(TreeUpdate(owner: 1, path: [1, 2, 9], lastUse: 200)))
        #expect(delta.updates.contains(TreeUpdate(owner: 0, path: [5, 6], lastUse: 400)))

        var b = Tree()
        b.apply(a.changes(since: 0))
        for key: [UInt64] in [[1, 2, 3, 4], [1, 2, 9], [5, 6]] {
            #expect(b.match(key, eligible: all) == a.match(key, eligible: all))
        }
        #expect(b.changes(since: 0).updates.isEmpty, "imported entries are not exported again")
        #expect(a.changes(since: a.version).updates.isEmpty)
    }

    @Test func aTrimmedLogFallsBackToTheWholeTree() {
        var a = Tree()
        a.changeLog.budget = 10
        for i in 0..<20 { a.insert([UInt64(i), 1, 2], owner: UInt16(i % 3), now: UInt64(i)) }
        let delta = a.changes(since: 1)
        #expect(delta.isFull)
        var b = Tree()
        b.apply(delta)
        for i in 0..<20 { #expect(b.match([UInt64(i), 1, 2], eligible: all).owners == [UInt16(i % 3)]) }
        var counted = Tree()
        counted.changeLog.maxEntries = 4
        for i in 0..<10 { counted.insert([UInt64(i)], owner: 0, now: 1) }
        #expect(counted.changeLog.count == 4, "the log is bounded in entries too")
        // Recent versions are still served as a delta.
        let recent = a.changes(since: a.version - 2)
        #expect(!recent.isFull && recent.updates.count == 2)
    }

    @Test func removedOwnersAreNotExported() {
        var a = Tree()
        a.insert([1, 2], owner: 0, now: 1)
        a.insert([3, 4], owner: 1, now: 2)
        a.remove(owner: 0)
        #expect(a.changes(since: 0).updates.map(\.owner) == [1])
    }

    @Test func importKeepsTheNewestStamp() {
        var a = Tree()
        a.insert([1, 2, 3], owner: 0, now: 500, local: false)
        a.apply(TreeDelta(fromVersion: 0, toVersion: 1, isFull: false, updates: [TreeUpdate(owner: 0, path: [1, 2, 3], lastUse: 100)]))
        a.insert([9, 9, 9], owner: 0, now: 300, local: false)
        a.evict(maxSize: 3)
        #expect(a.match([1, 2, 3], eligible: all).length == 3, "the stamp stayed at 500, newer than 300")
    }
}
