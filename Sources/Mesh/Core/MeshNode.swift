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
        /// The complete answer to a digest: every entry the asker lacked, and the answerer's
        /// vector, which the asker may then adopt.
        case answer([ReplicatedEntry], through: VersionVector)
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
    /// Every member seen that has not left gracefully, dead ones included: the divisor of
    /// cluster-wide budgets, so a partitioned minority never takes more than its share.
    public private(set) var budgetMembers: Set<String> = []
    /// When each peer's digest last arrived (this node's clock).
    public private(set) var lastDigest: [String: UInt64] = [:]
    public private(set) var counters = Counters()

    public struct Counters: Sendable, Equatable {
        public var pushed = 0, digests = 0, answers = 0, fullStates = 0, collected = 0
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

    /// How many writes this node has seen that `peer` had not, at its last digest.
    public func lag(of peer: String) -> UInt64? {
        replicator.peerContexts[peer].map { replicator.vector.writesAhead(of: $0.vector) }
    }

    // MARK: inputs

    public mutating func tick<R: RandomNumberGenerator>(now: UInt64, using rng: inout R) -> [Output] {
        var out = membership(swim.tick(now: now, using: &rng))
        guard swim.me.status == .alive else { return out }
        if now >= nextAntiEntropy {
            nextAntiEntropy = now + config.antiEntropyIntervalMs
            // Round-robin over the live members: each hears from this node every N seconds,
            // which bounds how long tombstone collection waits for everyone's vector.
            let alive = swim.aliveMembers
            if !alive.isEmpty {
                let turn = ((digestTurn ?? Int.random(in: 0..<alive.count, using: &rng)) + 1) % alive.count
                digestTurn = turn
                let peer = alive[turn]
                out.append(.send(to: peer.address, .digest(replicator.digest, reply: true)))
                counters.digests += 1
            }
        }
        if now >= nextCollection {
            nextCollection = now + config.collectIntervalMs
            counters.collected += replicator.collectTombstones(live: swim.aliveMembers.map(\.name))
        }
        return out
    }

    public mutating func receive<R: RandomNumberGenerator>(_ message: Message, from address: String, now: UInt64, wallMs: UInt64, using rng: inout R) -> [Output] {
        switch message {
        case .swim(let m):
            return membership(swim.receive(m, from: address, now: now, using: &rng))
        case .push(let entries):
            return replicator.apply(entries, physicalMs: wallMs).map { .changed(store: $0.store, key: $0.key, value: $0.value) }
        case .digest(let d, let reply):
            let peer = names[address] ?? address
            replicator.notePeer(peer, context: d.context)
            lastDigest[peer] = now
            var out: [Output] = []
            let missing = replicator.missing(for: d.context)
            // Answer when the asker lacks entries, or only our vector: a write superseded
            // before it reached the asker (or one from a dead router that nobody holds any
            // more) is vouched for by the vector alone, and tombstone collection needs it.
            if !missing.isEmpty || !d.vector.dominates(replicator.vector) {
                out.append(.send(to: address, .answer(missing, through: replicator.vector)))
                counters.answers += 1
            }
            let mine = replicator.digest
            guard reply else { return out }
            if mine.context == d.context, (mine.liveCount, mine.fingerprint) != (d.liveCount, d.fingerprint) {
                // Same writes seen, different entries: a member that came back holds something
                // deleted meanwhile (or the other way round). Full states settle it.
                out.append(fullState(to: address, reply: true))
            } else {
                // Our digest back: the asker sends what we lack, and learns our vector (every
                // live member's vector is what tombstone collection waits for).
                out.append(.send(to: address, .digest(mine, reply: false)))
            }
            return out
        case .answer(let entries, let vector):
            let peer = names[address] ?? address
            return replicator.absorb(entries, through: vector, from: peer, physicalMs: wallMs)
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

    /// A local write (nil deletes): applied here, pushed to every live member.
    public mutating func write(_ store: String, _ key: String, _ value: [UInt8]?, wallMs: UInt64) -> [Output] {
        let e = replicator.write(store, key, value, physicalMs: wallMs)
        counters.pushed += 1
        return swim.aliveMembers.map { .send(to: $0.address, .push([e])) }
    }

    public mutating func leave(now: UInt64) -> [Output] {
        swim.leave(now: now).map(Self.output)
    }

    // MARK: membership bookkeeping

    /// Follows membership changes: names by address, budget members, forgotten vectors of
    /// restarted members, and a full-state push to a member back from the dead (it may hold
    /// entries deleted while it was away, and may have missed deletions whose tombstones the
    /// live members have since collected).
    private mutating func membership(_ directives: [SwimNode.Directive]) -> [Output] {
        var out: [Output] = []
        for d in directives {
            out.append(Self.output(d))
            guard case .changed(let m) = d else { continue }
            let previous = known[m.name]
            known[m.name] = m
            names[m.address] = m.name
            if m.status == .left { budgetMembers.remove(m.name) } else { budgetMembers.insert(m.name) }
            if let previous, previous.generation != m.generation || m.status == .left {
                replicator.forgetPeer(m.name)
            }
            if m.status == .alive, let previous, previous.status == .dead, previous.generation == m.generation {
                out.append(fullState(to: m.address, reply: false))
            }
        }
        return out
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
