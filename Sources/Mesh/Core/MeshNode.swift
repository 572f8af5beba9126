import Primitives

/// One router's whole mesh protocol, pure: SWIM membership plus the replicated stores, with
/// the schedule that ties them together (anti-entropy, tombstone collection, full-state
/// exchange when a member comes back). Time and randomness are arguments; messages come in,
/// outputs go out. The shell only seals, sends and receives; the deterministic simulator
/// drives exactly this type, so what the simulation tests prove is what runs.
public struct MeshNode: Sendable {
    public struct Config: Sendable, Equatable {
        public var swim = SwimNode.Config()
        /// How often one live member gets this node's digest.
        public var antiEntropyIntervalMs: UInt64 = 1000
        /// How often acknowledged tombstones are collected.
        public var collectIntervalMs: UInt64 = 1000
        public init() {}
    }

    public enum Message: Sendable, Equatable {
        case swim(SwimNode.Message)
        /// Local writes, pushed to every live member as they happen.
        case push([ReplicatedEntry])
        /// "This is what I have seen": the receiver answers with what the sender lacks, and if
        /// `reply`, with its own digest (so one exchange repairs both ways).
        case digest(ReplicationDigest, reply: Bool)
        /// The complete answer to a digest: every entry the asker lacked, the answerer's
        /// counters where it was ahead, which the asker may then adopt, and the floors of
        /// origins the answerer retired that the asker still holds.
        case answer([ReplicatedEntry], through: VersionVector, retired: VersionVector = VersionVector())
        /// A full state, for a member back from the dead or when fingerprints disagree;
        /// `reply` asks for the receiver's full state in return.
        case state([ReplicatedEntry], context: CausalContext, reply: Bool)
    }

    public enum Output: Sendable, Equatable {
        case send(to: String, Message)
        /// A member's status or identity changed in this node's view.
        case member(SwimNode.Member)
        /// Another router's write changed a key here (nil: deleted).
        case changed(store: String, key: String, value: [UInt8]?)
    }

    public let config: Config
    public private(set) var swim: SwimNode
    public private(set) var replicator: Replicator
    private var nextAntiEntropy: UInt64 = 0
    private var nextCollection: UInt64 = 0
    /// Where this node is in its round of digests (starts at a random member, so that not
    /// every node sends to the same one in the same second).
    private var digestTurn: Int?
    /// Member name by address (messages arrive from addresses; vectors are kept by name).
    private var names: [String: String] = [:]
    private var known: [String: SwimNode.Member] = [:]
    /// Origins of processes this node knows ended: superseded by a newer generation of their
    /// name, left, or reaped after their death. Only these are retired. An origin merely
    /// missing from the member table may be a process this node has not heard of yet: a router
    /// just started can hold a member's full state, every origin of the cluster, before the
    /// member table, and when that counted as gone it retired every live origin at once.
    private var goneOrigins: Set<UInt64> = []
    /// Members alive or suspect, by name (kept as membership changes: counting them per
    /// message cost O(members)).
    private var live: Set<String> = []
    /// Every member seen that has not left gracefully, dead ones included: the divisor of
    /// cluster-wide budgets, so a partitioned minority never takes more than its share.
    public private(set) var budgetMembers: Set<String> = []
    /// When each peer's digest last arrived (this node's clock).
    public private(set) var lastDigest: [String: UInt64] = [:]
    public private(set) var counters = Counters()

    public struct Counters: Sendable, Equatable {
        public var pushed = 0, digests = 0, answers = 0, fullStates = 0, collected = 0
        /// Full states sent to a member back from the dead or a new process (`returnStates`), and
        /// because contexts agreed and entries did not (`divergenceStates`).
        public var returnStates = 0, divergenceStates = 0
    }

    public init(name: String, address: String, generation: UInt64, origin: UInt64, seeds: [String] = [], config: Config = Config()) {
        self.config = config
        swim = SwimNode(name: name, address: address, generation: generation, seeds: seeds, config: config.swim)
        replicator = Replicator(origin: origin)
    }

    // MARK: conveniences over the membership

    public var me: SwimNode.Member { swim.me }
    public var members: [String: SwimNode.Member] { swim.members }
    public func status(of name: String) -> SwimNode.Status? { swim.status(of: name) }
    public var aliveMembers: [SwimNode.Member] { swim.aliveMembers }
    public func values(of store: String) -> [String: [UInt8]] { replicator.state.values(of: store) }

    /// Replaces the join targets (see `SwimNode.setSeeds`).
    public mutating func setSeeds(_ addresses: [String]) { swim.setSeeds(addresses) }

    /// How many writes this node has seen that `peer` had not, at its last digest.
    public func lag(of peer: String) -> UInt64? {
        replicator.peerContexts[peer].map { replicator.vector.writesAhead(of: $0.vector) }
    }

    /// The earliest time at which `tick` must run (SWIM's deadlines, the next digest, the next
    /// collection): the shell's timer sleeps until then.
    ///
    /// Digests and collections are not urgent: when due they run in whichever tick comes first,
    /// and set a deadline of their own only a protocol period after they fell due. With members,
    /// SWIM ticks every period to probe, so they ride on probe ticks instead of waking the
    /// process twice more a second (an idle router's CPU is its wake-ups).
    public var nextDeadline: UInt64 {
        guard swim.me.status == .alive else { return .max }
        let slack = config.swim.protocolPeriodMs
        var next = min(swim.nextDeadline, nextCollection &+ slack)
        if !live.isEmpty { next = min(next, nextAntiEntropy &+ slack) }
        return next
    }

    // MARK: inputs

    public mutating func tick<R: RandomNumberGenerator>(now: UInt64, using rng: inout R) -> [Output] {
        var out = membership(swim.tick(now: now, using: &rng))
        guard swim.me.status == .alive else { return out }
        if now >= nextAntiEntropy {
            nextAntiEntropy = Cadence.next(after: nextAntiEntropy, every: config.antiEntropyIntervalMs, now: now)
            // Round-robin over the live members: each hears from this node every N seconds,
            // which bounds how long tombstone collection waits for everyone's vector.
            let alive = swim.aliveMembers
            if !alive.isEmpty {
                let turn = ((digestTurn ?? Int.random(in: 0..<alive.count, using: &rng)) + 1) % alive.count
                digestTurn = turn
                let peer = alive[turn]
                out.append(.send(to: peer.address, .digest(replicator.digest(), reply: true)))
                counters.digests += 1
            }
        }
        if now >= nextCollection {
            nextCollection = Cadence.next(after: nextCollection, every: config.collectIntervalMs, now: now)
            counters.collected += replicator.collectTombstones(live: swim.aliveMembers.map(\.name))
            retireOrigins()
        }
        return out
    }

    public mutating func receive<R: RandomNumberGenerator>(_ message: Message, from address: String, now: UInt64, wallMs: UInt64, using rng: inout R) -> [Output] {
        if case .swim(let m) = message { return membership(swim.receive(m, from: address, now: now, using: &rng)) }
        // SWIM's own messages send a probe that is due soon themselves; these do it here.
        return replication(message, from: address, now: now, wallMs: wallMs) + membership(swim.probeIfDueSoon(now: now, using: &rng))
    }

    private mutating func replication(_ message: Message, from address: String, now: UInt64, wallMs: UInt64) -> [Output] {
        switch message {
        case .swim: return []
        case .push(let entries):
            return replicator.apply(entries, physicalMs: wallMs).map { .changed(store: $0.store, key: $0.key, value: $0.value) }
        case .digest(let d, let reply):
            let peer = names[address] ?? address
            lastDigest[peer] = now
            return exchange(d, reply: reply, from: address, peer: peer)
        case .answer(let entries, let vector, let retired):
            let peer = names[address] ?? address
            return replicator.absorb(entries, through: vector, retired: retired, from: peer, physicalMs: wallMs)
                .map { .changed(store: $0.store, key: $0.key, value: $0.value) }
        case .state(let entries, let context, let reply):
            let peer = names[address] ?? address
            let changed = replicator.join(entries, context: context, from: peer, physicalMs: wallMs)
            var out: [Output] = changed.map { .changed(store: $0.store, key: $0.key, value: $0.entry?.value) }
            if reply {
                out.append(fullState(to: address, reply: false))
            }
            return out
        }
    }

    /// One step of an anti-entropy exchange, on a peer's digest.
    ///
    /// Once the peer's vector is known (sent whole, or resolved from its summary): the entries it
    /// lacks go back in one answer, with the counters where this node is ahead (a write
    /// superseded before it reached the peer, or one from a dead router that nobody holds any
    /// more, is vouched for by the counters alone, and tombstone collection needs them); then,
    /// if it asked, this node's digest, in enough detail for the peer to know this vector too.
    ///
    /// When a summary does not tell the peer's vector, this node answers with more detail of its
    /// own: its bucket hashes for a bare hash, or the exact counters of the buckets that differ
    /// for bucket hashes. Each step adds detail, so an exchange ends within five digests
    /// whatever writes arrive meanwhile.
    private mutating func exchange(_ d: ReplicationDigest, reply: Bool, from address: String, peer: String) -> [Output] {
        let mine = replicator.vector
        let theirs: VersionVector
        switch d.vector {
        case .whole(let v):
            theirs = v
        case .summary(let s):
            let buckets = mine.bucketHashes
            guard let resolved = s.resolve(against: mine, mineBuckets: buckets) else {
                let detail = s.buckets.isEmpty ? 0 : s.differingBuckets(from: buckets)
                let again = s.buckets.isEmpty || s.exactMask == 0
                return [.send(to: address, .digest(replicator.digest(buckets: true, exactMask: detail), reply: again))]
            }
            theirs = resolved
        }
        let context = CausalContext(vector: theirs, cloud: d.cloud)
        replicator.notePeer(peer, context: context)
        var out: [Output] = []
        let missing = replicator.missing(for: context)
        let ahead = mine.ahead(of: theirs)
        // Floors go only in an answer without entries: a version before retirement cannot read
        // them and drops the whole answer, which must not take entries with it. (They follow
        // in a later exchange, once the peer lacks nothing.)
        let retired = missing.isEmpty ? replicator.retired(heldBy: theirs) : VersionVector()
        if !missing.isEmpty || !ahead.counters.isEmpty || !retired.counters.isEmpty {
            out.append(.send(to: address, .answer(missing, through: ahead, retired: retired)))
            counters.answers += 1
        }
        guard reply else { return out }
        if theirs == mine, d.cloud == replicator.state.context.cloud,
           (replicator.state.liveCount, replicator.state.fingerprint) != (d.liveCount, d.fingerprint) {
            // Same writes seen, different entries: a member that came back holds something
            // deleted meanwhile (or the other way round). Full states settle it.
            counters.divergenceStates += 1
            out.append(fullState(to: address, reply: true))
            return out
        }
        // Our digest back: the peer sends what we lack, and learns our vector (every live
        // member's vector is what tombstone collection waits for).
        let differing = mine.differingBuckets(from: theirs)
        out.append(.send(to: address, .digest(replicator.digest(buckets: differing != 0, exactMask: differing), reply: false)))
        return out
    }

    /// A local write (nil deletes): applied here, pushed to every live member.
    public mutating func write(_ store: String, _ key: String, _ value: [UInt8]?, wallMs: UInt64) -> [Output] {
        let e = replicator.write(store, key, value, physicalMs: wallMs)
        counters.pushed += 1
        return swim.aliveMembers.map { .send(to: $0.address, .push([e])) }
    }

    public mutating func leave(now: UInt64) -> [Output] {
        swim.leave(now: now).map(Self.output)
    }

    /// A process's replication origin: its name mixed with its generation, so that every
    /// start of a router is a new origin (the shell and the simulator use this).
    public static func origin(name: String, generation: UInt64) -> UInt64 { FNV1a.hash(name) ^ generation }

    /// Retires the origins of processes that are gone once every live member has seen their
    /// last writes (`Replicator.retireOrigins`). A process is gone when this node knows it
    /// ended (`goneOrigins`): superseded by a newer generation of its name, left, or reaped
    /// after its death. (A dead member not yet reaped may still refute and write again.)
    private mutating func retireOrigins() {
        for m in known.values where swim.members[m.name] == nil && m.name != swim.me.name {
            goneOrigins.insert(Self.origin(name: m.name, generation: m.generation))
        }
        let vector = replicator.vector
        goneOrigins = goneOrigins.filter { vector.counters[$0] != nil }
        guard !goneOrigins.isEmpty else { return }
        replicator.retireOrigins(goneOrigins, peers: Array(live))
    }

    // MARK: membership bookkeeping

    /// Follows membership changes: names by address, budget members, forgotten vectors of
    /// restarted members, and a full-state push to a member back from the dead (it may hold
    /// entries deleted while it was away, and may have missed deletions whose tombstones the
    /// live members have since collected).
    private mutating func membership(_ directives: [SwimNode.Directive]) -> [Output] {
        var out: [Output] = []
        let wasAlone = live.isEmpty
        for d in directives {
            out.append(Self.output(d))
            guard case .changed(let m) = d else { continue }
            let previous = known[m.name]
            known[m.name] = m
            names[m.address] = m.name
            if m.status == .alive || m.status == .suspect { live.insert(m.name) } else { live.remove(m.name) }
            if m.status == .left { budgetMembers.remove(m.name) } else { budgetMembers.insert(m.name) }
            if let previous, previous.generation != m.generation || m.status == .left {
                replicator.forgetPeer(m.name)
            }
            if let previous, previous.generation != m.generation { goneOrigins.insert(Self.origin(name: previous.name, generation: previous.generation)) }
            if m.status == .left { goneOrigins.insert(Self.origin(name: m.name, generation: m.generation)) }
            if m.status == .alive, let previous, previous.status == .dead, previous.generation == m.generation, pushesState(toReturned: m.name) {
                counters.returnStates += 1
                out.append(fullState(to: m.address, reply: false))
            } else if m.status == .alive, previous.map({ $0.generation != m.generation }) ?? true,
                      !replicator.state.context.retired.isEmpty, pushesState(toReturned: m.name) {
                // A new process: anti-entropy does not send it the writes of retired origins
                // (peers that lack an origin in their vector are taken to have retired it), so a
                // full state brings them, with the floors.
                counters.returnStates += 1
                out.append(fullState(to: m.address, reply: false))
            }
        }
        if wasAlone, !live.isEmpty {
            // Writes made while this node knew no member (a router publishes its workers as it
            // starts, before it has joined) were pushed to nobody: they go now, as any write
            // would have, instead of spreading one digest exchange at a time.
            let own = replicator.state.allEntries.filter { $0.dot.origin == replicator.origin }
            if !own.isEmpty {
                for name in live.sorted() { if let a = known[name]?.address { out.append(.send(to: a, .push(own))) } }
            }
        }
        return out
    }

    /// Whether this node is one of the about three members that push a full state to `name`,
    /// back from the dead. When every member did, the returner got one full state per member
    /// at once: at 1,000 simulated routers, most of the mesh's traffic. Should none be chosen
    /// (about one return in twenty), the returner's digests find the difference all the same
    /// (equal vectors, different fingerprints), a few seconds later.
    private func pushesState(toReturned name: String) -> Bool {
        let choosers = UInt64(max(1, (swim.members.count + 1) / 3))
        return FNV1a.hash(me.name + "\u{0}" + name) % choosers == 0
    }

    /// This node's whole replicated state, for `address`.
    private mutating func fullState(to address: String, reply: Bool) -> Output {
        counters.fullStates += 1
        return .send(to: address, .state(replicator.state.allEntries, context: replicator.state.context, reply: reply))
    }

    private static func output(_ d: SwimNode.Directive) -> Output {
        switch d {
        case .send(let to, let m): .send(to: to, .swim(m))
        case .changed(let m): .member(m)
        }
    }
}
