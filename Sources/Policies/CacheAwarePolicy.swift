/// Warm-up of new or thin workers in `cache_aware` (`--worker-warmup-*`).
public struct CacheAwareWarmup: Sendable, Equatable {
    /// A worker warms for this long after it is first routable (`--worker-warmup-secs`).
    public var durationMs: UInt64 = 60_000
    /// One cache miss in 1/share goes to a warming worker (`--worker-warmup-share`).
    public var share = 0.25
    /// Warm once its tree grew by this many blocks (`--worker-warmup-blocks`).
    public var blocks = 1024
    /// Thin, and warming again, below this share of the fleet's median tree (`--worker-warmup-thin-ratio`; 0: the age rule alone).
    public var thinRatio = 0.5
    /// One cache hit in this many is diverted to an idle warming worker (`--worker-warmup-divert-every`; 0: never).
    public var divertEvery = 8
    public init() {}
}

/// Knobs of `cache_aware` (the gateway's documented defaults).
public struct CacheAwareConfig: Sendable, Equatable {
    /// Follow the cache when more than this fraction of the prompt is already held by a worker.
    public var cacheThreshold = 0.3
    /// Imbalanced when max load − min load exceeds this …
    public var balanceAbsThreshold = 64
    /// … and max load exceeds this times min load.
    public var balanceRelThreshold = 1.5
    /// Prompt bytes each worker may hold in the tree before least recently used entries go.
    public var maxTreeSize = 67_108_864
    /// Prompt bytes per tree element (see `PromptBlocks`).
    public var blockSize = 16
    /// KV-usage spread: when the hottest minus the coldest reported KV-cache usage is above
    /// this, cache affinity gives way to the least loaded worker (`--balance-token-usage-threshold`;
    /// 1.0 or more: off). Unlike request counts it is the same on every router of a fleet.
    public var balanceTokenUsageThreshold = 1.0
    /// KV-usage ceiling: a worker whose reported KV-cache usage is above this is passed over
    /// while another is not (`--overload-token-usage-threshold`; 1.0 or more: off).
    public var overloadTokenUsageThreshold = 1.0
    /// Warm-up of workers that are new or thin (`--worker-warmup-*`; 0 ms: off): see `Warmup`.
    public var warmup = CacheAwareWarmup()
    /// Whether either guard is on: only then are candidates given their KV usage.
    public var readsTokenUsage: Bool { balanceTokenUsageThreshold < 1 || overloadTokenUsageThreshold < 1 }
    /// Keep a log of decisions for `summary(since:)`: on when other routers consume summaries
    /// (the mesh); off, a summary is always the whole tree and decisions log nothing.
    public var recordsSummaries = false
    public init() {}
}

/// A worker warming in `cache_aware`: since when, the tree size it started from, and whether
/// thinness (not newness) started it.
struct WarmingWorker: Sendable {
    var sinceMs: UInt64
    var baseline: Int
    var thin: Bool
}

/// `cache_aware`, as the reference gateway defines it.
///
/// When the load is balanced, a request goes to the worker holding the longest prefix of its
/// prompt if that prefix is more than `cacheThreshold` of it, else to the worker holding the
/// least (the most spare cache). When the load is imbalanced — max − min above the absolute
/// threshold *and* max above the relative threshold times min — the least loaded worker wins.
/// Either way the prompt is recorded in the tree for the chosen worker.
///
/// Two guards on the KV-cache usage workers report, both off by default: above the ceiling a
/// worker is passed over while another is not; and a spread between the hottest and the coldest
/// above the balance threshold counts as imbalance (the least loaded wins).
public struct CacheAwarePolicy: LoadBalancingPolicy {
    public let name = "cache_aware"
    public let config: CacheAwareConfig
    public private(set) var tree: RadixTree<UInt64>
    private var slots: [String: RadixTree<UInt64>.Owner] = [:]
    private var slotIDs: [String?] = []
    /// Workers warming (`CacheAwareConfig.Warmup`): since when, the tree size they started
    /// from, and whether thinness (not newness) started it.
    private(set) var warming: [String: WarmingWorker] = [:]
    /// Workers seen routable (the age rule starts once per worker).
    private var seen: Set<String> = []
    private var lastWarmupReviewMs: UInt64? = nil
    /// Cache hits and misses so far, for one in `divertEvery` and one in 1/share.
    private var hits = 0
    private var misses = 0

    public init(_ config: CacheAwareConfig = CacheAwareConfig()) {
        self.config = config
        self.tree = RadixTree(recordingChanges: config.recordsSummaries)
    }

    public var stateSize: Int { tree.size * config.blockSize }

    mutating func slot(for id: String) -> RadixTree<UInt64>.Owner {
        if let s = slots[id] { return s }
        let s: RadixTree<UInt64>.Owner
        if let free = slotIDs.firstIndex(where: { $0 == nil }) {
            s = RadixTree<UInt64>.Owner(free)
            slotIDs[free] = id
        } else {
            s = RadixTree<UInt64>.Owner(slotIDs.count)
            slotIDs.append(id)
        }
        slots[id] = s
        return s
    }

    /// The reference gateway's imbalance test over the available workers' loads.
    public static func isImbalanced(loads: [Int], absThreshold: Int, relThreshold: Double) -> Bool {
        guard let maxLoad = loads.max(), let minLoad = loads.min() else { return false }
        return maxLoad - minLoad > absThreshold && Double(maxLoad) > relThreshold * Double(minLoad)
    }

    public mutating func select<R: RandomNumberGenerator>(
        _ request: RoutingRequest, from workers: [WorkerCandidate], using rng: inout R
    ) -> Selection? {
        var available: [Int] = []
        available.reserveCapacity(workers.count)
        for i in workers.indices where workers[i].isAvailable { available.append(i) }
        guard !available.isEmpty else { return nil }
        let key = PromptBlocks.hashes(request.routingText, blockSize: config.blockSize)
        var kvImbalanced = false
        if config.readsTokenUsage {
            // The ceiling: over it, a worker is passed over while another is not.
            let cool = available.filter { (workers[$0].tokenUsage ?? 0) <= config.overloadTokenUsageThreshold }
            if !cool.isEmpty { available = cool }
            let usages = available.compactMap { workers[$0].tokenUsage }
            if let hot = usages.max(), let cold = usages.min() { kvImbalanced = hot - cold > config.balanceTokenUsageThreshold }
        }

        if config.warmup.durationMs > 0 { reviewWarmup(workers, available, now: request.now) }

        var selection: Selection
        if kvImbalanced || Self.isImbalanced(loads: available.map { workers[$0].load }, absThreshold: config.balanceAbsThreshold,
                                             relThreshold: config.balanceRelThreshold) {
            selection = Selection(available.min { workers[$0].load < workers[$1].load }!, .imbalance)
        } else {
            // Which tree owner is which available candidate.
            var candidateOfSlot = [Int](repeating: -1, count: slotIDs.count)
            for i in available { if let s = slots[workers[i].id] { candidateOfSlot[Int(s)] = i } }
            let match = tree.match(key) { Int($0) < candidateOfSlot.count && candidateOfSlot[Int($0)] >= 0 }
            let ratio = request.routingText.isEmpty ? 0 : Double(match.length * config.blockSize) / Double(request.routingText.count)
            if ratio > config.cacheThreshold, !match.owners.isEmpty {
                let owners = match.owners.map { candidateOfSlot[Int($0)] }
                selection = Selection(owners.min { workers[$0].load < workers[$1].load }!, .cacheHit, matchRatio: min(1, ratio))
            } else {
                // Most spare cache: the worker holding the least, then the less loaded.
                let held = available.map { i in slots[workers[i].id].map { tree.size(of: $0) } ?? 0 }
                let best = available.indices.min { (held[$0], workers[available[$0]].load) < (held[$1], workers[available[$1]].load) }!
                selection = Selection(available[best], .cacheMiss, matchRatio: min(1, ratio))
            }
            if !warming.isEmpty, let warm = warmupChoice(for: selection, workers, available) { selection = warm }
        }
        let owner = slot(for: workers[selection.index].id)
        tree.insert(key, owner: owner, now: request.now)
        // Between periodic evictions a flood of new prompts could grow the tree without bound:
        // past twice its size bound, a worker's entries are evicted at once.
        if tree.size(of: owner) > 2 * elementBound { tree.evict(maxSize: elementBound) }
        return selection
    }

    // MARK: warm-up

    /// Starts and ends warm-ups, at most once a second: a worker first seen routable warms (the
    /// age rule); so does one whose tree is under `thinRatio` of the fleet's median, or empty
    /// while others are not (the thin rule, whatever emptied it: eviction, a restart). A warm-up
    /// ends once the tree grew by `blocks`, or, past `durationMs`, once the worker is not thin.
    mutating func reviewWarmup(_ workers: [WorkerCandidate], _ available: [Int], now: UInt64) {
        if let last = lastWarmupReviewMs, now < last + 1000, available.allSatisfy({ seen.contains(workers[$0].id) }) { return }
        lastWarmupReviewMs = now
        let w = config.warmup
        let held = available.map { i in slots[workers[i].id].map { tree.size(of: $0) } ?? 0 }
        let median = held.sorted()[held.count / 2]
        for (k, i) in available.enumerated() {
            let id = workers[i].id
            let thin = w.thinRatio > 0 && median > 0 && Double(held[k]) < w.thinRatio * Double(median)
            if seen.insert(id).inserted {
                warming[id] = WarmingWorker(sinceMs: now, baseline: held[k], thin: false)
            } else if let entry = warming[id] {
                let grown = held[k] - entry.baseline >= w.blocks
                if grown || (now >= entry.sinceMs + w.durationMs && !thin) { warming[id] = nil }
            } else if thin {
                warming[id] = WarmingWorker(sinceMs: now, baseline: held[k], thin: true)
            }
        }
    }

    /// The warm-up's say in a balanced decision that chose a worker not warming itself: one
    /// miss in 1/share, and one hit in `divertEvery`, go to the warming worker holding the least
    /// that has nothing in flight from the routers (one at a time, so warming costs no queue).
    /// A miss mostly goes to a warming worker anyway: the miss rule picks the worker holding least.
    mutating func warmupChoice(for selection: Selection, _ workers: [WorkerCandidate], _ available: [Int]) -> Selection? {
        let w = config.warmup
        guard warming[workers[selection.index].id] == nil else { return nil }
        let due: Bool
        switch selection.reason {
        case .cacheMiss:
            misses += 1
            let every = w.share > 0 ? max(1, Int((1 / w.share).rounded())) : 0
            due = every > 0 && misses % every == 0
        case .cacheHit:
            hits += 1
            due = w.divertEvery > 0 && hits % w.divertEvery == 0
        default:
            return nil
        }
        guard due else { return nil }
        let idle = available.filter { warming[workers[$0].id] != nil && workers[$0].inFlight == 0 && $0 != selection.index }
        let sizes = idle.map { i in slots[workers[i].id].map { tree.size(of: $0) } ?? 0 }
        guard let k = sizes.indices.min(by: { sizes[$0] < sizes[$1] }) else { return nil }
        let target = idle[k]
        return Selection(target, .warmup, matchRatio: selection.matchRatio)
    }

    public mutating func removeWorker(id: String) {
        warming[id] = nil
        seen.remove(id)
        guard let s = slots.removeValue(forKey: id) else { return }
        tree.remove(owner: s)
        slotIDs[Int(s)] = nil
    }

    /// The per-worker size bound in tree elements.
    var elementBound: Int { max(1, config.maxTreeSize / config.blockSize) }

    public mutating func maintain(now: UInt64) {
        tree.evict(maxSize: elementBound)
    }

    /// How many bytes of `text` the tree says some worker holds, and which workers (status,
    /// benchmarks, tests). Does not record anything.
    public func cachedPrefix(of text: [UInt8]) -> (bytes: Int, workers: [String]) {
        let m = tree.match(PromptBlocks.hashes(text, blockSize: config.blockSize)) { _ in true }
        return (m.length * config.blockSize, m.owners.compactMap { slotIDs[Int($0)] })
    }

    /// Evicts every worker down to `bytes` of prompt (what `maintain` does with `maxTreeSize`).
    public mutating func evict(toBytesPerWorker bytes: Int) {
        tree.evict(maxSize: max(0, bytes / config.blockSize))
    }

    // MARK: summaries for other routers

    /// This router's own routing decisions since `version`, with worker ids for owners.
    public func summary(since version: UInt64) -> TreeDelta<UInt64, String> {
        let d = tree.changes(since: version)
        return TreeDelta(fromVersion: d.fromVersion, toVersion: d.toVersion, isFull: d.isFull,
                         updates: d.updates.compactMap { u in
                             slotIDs[Int(u.owner)].map { TreeUpdate(owner: $0, path: u.path, lastUse: u.lastUse) }
                         })
    }

    public func summary(since version: UInt64) -> (TreeDelta<UInt64, String>, UInt64)? {
        guard version < tree.version else { return nil }
        return (summary(since: version), tree.version)
    }

    public mutating func apply(summary: TreeDelta<UInt64, String>) { apply(summary) }

    public func exportChunk(
        after cursor: inout TreeExportCursor<UInt64>, maxPathLength: Int,
        begin: (_ ancestors: [ArraySlice<UInt64>]) -> Bool,
        accept: (_ depth: Int, _ label: ArraySlice<UInt64>, _ owners: [TreeStamp<String>]) -> Bool
    ) -> Int {
        tree.exportChunk(after: &cursor, maxPathLength: maxPathLength, begin: begin) { depth, label, owners in
            accept(depth, label, owners.compactMap { s in slotIDs[Int(s.owner)].map { TreeStamp(owner: $0, lastUse: s.lastUse) } })
        }
    }

    public mutating func apply(chunk: TreeChunk<UInt64, String>) -> Bool {
        chunk.forEachEntry { stamp, path in
            let owner = slot(for: stamp.owner)
            tree.insert(path, owner: owner, now: stamp.lastUse, local: false)
        }
    }

    /// Learns another router's decisions, so requests it routed find their worker here too.
    public mutating func apply(_ summary: TreeDelta<UInt64, String>) {
        let local = TreeDelta<UInt64, RadixTree<UInt64>.Owner>(
            fromVersion: summary.fromVersion, toVersion: summary.toVersion, isFull: summary.isFull,
            updates: summary.updates.map { TreeUpdate(owner: slot(for: $0.owner), path: $0.path, lastUse: $0.lastUse) })
        tree.apply(local)
    }
}
