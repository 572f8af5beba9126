/// What a replica tells a peer about itself in anti-entropy: its causal context (the vector,
/// whole or summarized, plus the few writes seen out of order), and how many live entries it
/// holds with their fingerprint (to notice divergence that vectors cannot show).
public struct ReplicationDigest: Sendable, Equatable {
    public enum Vector: Sendable, Equatable {
        /// Small vectors (at most `VectorSummary.wholeUpTo` origins) travel whole.
        case whole(VersionVector)
        case summary(VectorSummary)
    }

    public var vector: Vector
    /// Writes seen out of order (almost always none).
    public var cloud: Set<Dot>
    public var liveCount: UInt64
    public var fingerprint: UInt64

    public init(vector: Vector, cloud: Set<Dot> = [], liveCount: UInt64, fingerprint: UInt64) {
        self.vector = vector
        self.cloud = cloud
        self.liveCount = liveCount
        self.fingerprint = fingerprint
    }

    /// A digest carrying the whole context.
    public init(context: CausalContext, liveCount: UInt64, fingerprint: UInt64) {
        self.init(vector: .whole(context.vector), cloud: context.cloud, liveCount: liveCount, fingerprint: fingerprint)
    }
}

/// One replica of the replicated stores, pure: physical time comes in, entries go out.
///
/// - A local write gets an HLC stamp (its last-writer-wins order) and the next dot of this
///   replica's origin; the shell pushes it to every live member at once.
/// - Anti-entropy: a peer's digest (its vector) says exactly which entries it lacks, and only
///   those travel, in one complete answer that carries this replica's vector along.
/// - Peers' contexts, learnt from their digests, say what every live member has seen; a
///   tombstone they have all seen, with everything it deleted, is collected (acknowledged
///   garbage collection, not a timeout).
public struct Replicator: Sendable {
    public private(set) var state = ReplicaState()
    private var clock: HybridLogicalClock
    private var seq: UInt64 = 0
    /// Entries refused because their stamp was further ahead of this node's physical clock
    /// than the clock follows (`HybridLogicalClock.maxDriftMs`): a peer whose clock jumped
    /// ahead. Applied, one such write would win over every later write of its key until real
    /// time caught up, maybe for years. Refused, its dot stays uncovered here, so the peer
    /// keeps offering it and it is taken once it is within the bound: replicas wait, they do
    /// not part for good. Counted so an operator sees it.
    public private(set) var stampsAhead = 0
    /// What each peer had seen at its last report, by member name.
    public private(set) var peerContexts: [String: CausalContext] = [:]

    /// `origin` must be unique per process start (the shell mixes the name and generation).
    public init(origin: UInt64) {
        clock = HybridLogicalClock(node: origin)
    }

    public var origin: UInt64 { clock.node }
    public var vector: VersionVector { state.context.vector }

    public func value(_ store: String, _ key: String) -> [UInt8]? { state.entry(store, key)?.value }

    /// This replica's digest: the whole vector when it is small; otherwise its summary, with
    /// bucket hashes and the exact counters of `exactMask`'s buckets when `buckets`, or only
    /// its hash (the first message of an exchange, and the whole of one between equal replicas).
    public func digest(buckets: Bool = false, exactMask: UInt64 = 0) -> ReplicationDigest {
        let v = state.context.vector
        let summary: ReplicationDigest.Vector
        if v.counters.count <= VectorSummary.wholeUpTo {
            summary = .whole(v)
        } else if buckets {
            summary = .summary(VectorSummary(of: v, exactMask: exactMask))
        } else {
            summary = .summary(VectorSummary(hashOf: v))
        }
        return ReplicationDigest(vector: summary, cloud: state.context.cloud, liveCount: state.liveCount, fingerprint: state.fingerprint)
    }

    /// A local write (nil deletes); returns the entry to push.
    public mutating func write(_ store: String, _ key: String, _ value: [UInt8]?, physicalMs: UInt64) -> ReplicatedEntry {
        seq += 1
        let e = ReplicatedEntry(store: store, key: key, value: value, stamp: clock.now(physicalMs: physicalMs),
                                dot: Dot(origin: origin, seq: seq), seen: value == nil ? state.context.vector : nil)
        state.record(e)
        return e
    }

    /// Entries pushed by a peer; returns those that changed a value here.
    public mutating func apply(_ entries: [ReplicatedEntry], physicalMs: UInt64) -> [ReplicatedEntry] {
        admitted(entries, physicalMs: physicalMs).filter { state.apply($0) }
    }

    /// A peer's complete answer to our digest. Its vector vouches for every entry sent: with
    /// one refused, only the admitted entries are taken, each on its own, and the vector is
    /// not, so the refused dot stays wanted. Origins the peer retired are retired here too
    /// (after the entries, which their floors would otherwise cover).
    public mutating func absorb(_ entries: [ReplicatedEntry], through vector: VersionVector, retired: VersionVector = VersionVector(),
                                from peer: String, physicalMs: UInt64) -> [ReplicatedEntry] {
        var known = peerContexts[peer] ?? CausalContext()
        known.merge(vector)
        notePeer(peer, context: known)
        let admitted = admitted(entries, physicalMs: physicalMs)
        guard admitted.count == entries.count else { return admitted.filter { state.apply($0) } }
        let changed = state.absorb(entries, through: vector)
        adoptRetired(retired)
        return changed
    }

    /// A peer's full state; returns the keys whose value changed here (nil: now absent). As
    /// with an answer, a refused entry makes the join entry by entry, without the context (whose
    /// coverage would say the refused write, and what it replaced, are gone).
    public mutating func join(_ entries: [ReplicatedEntry], context: CausalContext, from peer: String, physicalMs: UInt64) -> [(store: String, key: String, entry: ReplicatedEntry?)] {
        notePeer(peer, context: context)
        let admitted = admitted(entries, physicalMs: physicalMs)
        guard admitted.count == entries.count else {
            return admitted.filter { state.apply($0) }.map { ($0.store, $0.key, $0) }
        }
        // The peer's floors come with its context: what they cover and this replica holds
        // alone was deleted there, as for its vector.
        return state.merge(entries: entries, context: context)
    }

    // MARK: retiring the origins of processes that are gone

    /// Retires every origin in `gone` (of processes known to have ended; never this replica's
    /// own) that every one of `peers` (the live members) has seen exactly as far as this
    /// replica. A peer whose context is not known yet holds retirement back. Returns how many
    /// origins were retired.
    @discardableResult
    public mutating func retireOrigins(_ gone: Set<UInt64>, peers: [String]) -> Int {
        var retired = 0
        for o in gone where o != origin {
            guard let seq = state.context.vector.counters[o] else { continue }
            guard peers.allSatisfy({ peerContexts[$0]?.seen(o) == seq }) else { continue }
            state.retire(o, at: seq)
            retired += 1
        }
        return retired
    }

    /// Floors a peer retired origins at: each is taken where this vector is not past it.
    public mutating func adoptRetired(_ floors: VersionVector) {
        for (o, seq) in floors.counters where state.context.vector[o] <= seq { state.retire(o, at: seq) }
    }

    /// The floors of the origins retired here that `vector` (a peer's) still holds, at or
    /// below the floor: what to tell that peer so that it retires them too.
    public func retired(heldBy vector: VersionVector) -> VersionVector {
        let floors = state.context.retired
        guard !floors.isEmpty else { return VersionVector() }
        var out = VersionVector()
        for (o, seq) in vector.counters { if let f = floors[o], seq <= f { out[o] = f } }
        return out
    }

    /// The entries whose stamps the clock follows, each observed; the rest counted.
    private mutating func admitted(_ entries: [ReplicatedEntry], physicalMs: UInt64) -> [ReplicatedEntry] {
        var out: [ReplicatedEntry] = []
        out.reserveCapacity(entries.count)
        for e in entries {
            guard !clock.isAhead(e.stamp, physicalMs: physicalMs) else {
                stampsAhead += 1
                continue
            }
            clock.observe(e.stamp, physicalMs: physicalMs)
            out.append(e)
        }
        return out
    }

    /// What a peer that reported `vector` lacks.
    public func missing(for vector: VersionVector) -> [ReplicatedEntry] { state.entries(notCoveredBy: vector) }

    /// What a peer that reported `context` lacks (writes it saw out of order are not resent).
    /// Writes of an origin retired here go only to a peer whose vector still holds the origin:
    /// one without it retired it too (so it has them), or joined since and was sent a full
    /// state; should it lack them all the same, its fingerprint tells.
    public func missing(for context: CausalContext) -> [ReplicatedEntry] {
        let floors = state.context.retired
        return state.entries(notCoveredBy: context.vector).filter {
            !context.cloud.contains($0.dot) && (floors[$0.dot.origin] == nil || context.vector[$0.dot.origin] > 0)
        }
    }

    /// Records what a peer has seen (from its digest, answer or full state).
    public mutating func notePeer(_ peer: String, context: CausalContext) {
        peerContexts[peer] = context
    }

    /// A peer restarted or left for good: what its old process had seen says nothing any more.
    public mutating func forgetPeer(_ peer: String) { peerContexts[peer] = nil }

    /// Collects the tombstones that every member in `live` (other than this replica) has seen,
    /// with everything they deleted. A live member whose vector is not known yet holds
    /// collection back. Returns how many went.
    @discardableResult
    public mutating func collectTombstones(live: [String]) -> Int {
        guard state.tombstoneCount > 0 else { return 0 }
        var contexts = [state.context]
        for name in live {
            guard let c = peerContexts[name] else { return 0 }
            contexts.append(c)
        }
        return state.collectTombstones(seenBy: contexts)
    }
}
