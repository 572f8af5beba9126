import Primitives

/// SWIM membership with the Lifeguard refinements, as a pure state machine: time and
/// randomness are arguments, messages in and directives out. No sockets, no clocks, no sleeps:
/// the shell (or the deterministic simulator in the tests) moves the messages.
///
/// - Failure detection: every protocol period a member is pinged (round-robin over a shuffled
///   list); no ack within the probe timeout sends ping-reqs through `indirectProbes` others; no
///   ack by the end of the period makes it *suspect*.
/// - Suspicion: a suspect is declared *dead* after a timeout that starts long and shrinks with
///   each independent confirmation (Lifeguard), unless it refutes: a member that hears it is
///   suspected raises its incarnation and says it is alive.
/// - Identity: a member is a name plus a *generation* that grows with every process start (the
///   shell uses its start time in milliseconds), so a restarted node rejoins under the same name
///   and supersedes its dead predecessor.
/// - Dissemination: updates ride on pings and acks from a transmit-limited queue; a periodic
///   push-pull exchanges full state with one member, sometimes a dead one, so partitions heal.
/// - Leaving: a member that leaves says so; others mark it *left* at once.
public struct SwimNode: Sendable {
    public struct Config: Sendable, Equatable {
        public var protocolPeriodMs: UInt64 = 1000
        public var probeTimeoutMs: UInt64 = 400
        public var indirectProbes = 3
        /// Suspicion timeout = mult × log10(n) × period, at least one period; up to 6× that
        /// without confirmations.
        public var suspicionMult = 4.0
        public var suspicionMaxMult = 6.0
        /// Each update is piggybacked retransmitMult × log10(n + 1) times (at least 3).
        public var retransmitMult = 4.0
        public var maxGossipPerMessage = 16
        public var pushPullIntervalMs: UInt64 = 10_000
        /// How long dead and left members are remembered (so late rumours about them lose).
        public var reapAfterMs: UInt64 = 60_000
        /// Seeds not yet members are asked to let us join this often.
        public var joinRetryMs: UInt64 = 1000
        /// Timer slack for probes: a probe due within this long is sent by whatever tick or
        /// message comes first. A real router's idle CPU is its wake-ups, and a probe that rides
        /// on one already happening (a peer's ping, a digest) saves one. The next probe is still
        /// due a period after this one was due, so probes go out at the same rate.
        public var probeEarlyMs: UInt64 = 0
        public init() {}
    }

    public enum Status: String, Sendable, Comparable {
        case alive, suspect, dead, left
        var rank: Int { switch self { case .alive: 0; case .suspect: 1; case .dead: 2; case .left: 3 } }
        public static func < (a: Status, b: Status) -> Bool { a.rank < b.rank }
    }

    /// A claim about a member: what gossip carries and what the member table holds.
    public struct Member: Sendable, Equatable {
        public var name: String
        public var address: String
        public var generation: UInt64
        public var incarnation: UInt64
        public var status: Status
        /// Who made this claim: for a suspicion, the suspecting node (Lifeguard counts
        /// confirmations by distinct origins, not by how many relayed the rumour).
        public var origin: String
        public init(name: String, address: String, generation: UInt64, incarnation: UInt64, status: Status, origin: String = "") {
            self.name = name
            self.address = address
            self.generation = generation
            self.incarnation = incarnation
            self.status = status
            self.origin = origin
        }
    }

    public enum Message: Sendable, Equatable {
        case ping(seq: UInt64, gossip: [Member])
        case ack(seq: UInt64, gossip: [Member])
        case pingReq(seq: UInt64, target: String, gossip: [Member])
        case join(Member)
        /// Full state; `reply` asks the receiver to answer with its own. (A join's answer; also
        /// how versions without `syncDigest` push-pull.)
        case sync([Member], reply: Bool)
        /// Push-pull's first step: the hash of each of the 64 buckets of this node's member
        /// table (members are spread over buckets by name). The receiver answers with
        /// `syncBuckets` for the buckets that differ, and with nothing when none does.
        case syncDigest([UInt64])
        /// The members (this node included) of the buckets in `mask`; `reply` asks for the
        /// receiver's members of the same buckets.
        case syncBuckets(mask: UInt64, members: [Member], reply: Bool)
    }

    public enum Directive: Sendable, Equatable {
        case send(to: String, Message)
        /// A member's status (or identity) changed in this node's view.
        case changed(Member)
    }

    // MARK: state

    public let config: Config
    public private(set) var me: Member
    public private(set) var members: [String: Member] = [:]
    /// When each member entered its current status (for reaping).
    private var since: [String: UInt64] = [:]
    private var seeds: [String]
    private var lastJoinAttempt: UInt64?
    private var seq: UInt64 = 0
    private var probeOrder: [String] = []
    private var probeIndex = 0
    private var nextProbeAt: UInt64 = 0
    private var nextPushPullAt: UInt64 = 0
    private var currentProbe: (target: String, seq: UInt64, sentAt: UInt64, indirect: Bool)?
    /// Pings sent on behalf of a ping-req: our seq → (requester address, its seq).
    private var relays: [UInt64: (requester: String, seq: UInt64, at: UInt64)] = [:]
    private var suspicions: [String: (start: UInt64, confirmations: Set<String>)] = [:]
    private var broadcasts: [(member: Member, transmits: Int)] = []

    public init(name: String, address: String, generation: UInt64, seeds: [String] = [], config: Config = Config()) {
        self.config = config
        self.me = Member(name: name, address: address, generation: generation, incarnation: 0, status: .alive, origin: name)
        self.seeds = seeds.filter { $0 != address }
    }

    /// Replaces the join targets (peers found at run time, such as router pods listed by a
    /// Kubernetes selector). New seeds that are not members are asked at the next tick, not a
    /// join retry later; a seed dropped here is no longer asked, and if it was a member SWIM's
    /// own failure detection decides what becomes of it.
    public mutating func setSeeds(_ addresses: [String]) {
        let next = Array(Set(addresses.filter { $0 != me.address })).sorted()
        guard next != seeds.sorted() else { return }
        if !Set(next).subtracting(seeds).isEmpty { lastJoinAttempt = nil }
        seeds = next
    }

    /// The current join targets.
    public var joinTargets: [String] { seeds }

    /// Live members other than this node, by name (a stable order keeps seeded runs replayable).
    public var aliveMembers: [Member] {
        members.values.filter { $0.status == .alive || $0.status == .suspect }.sorted { $0.name < $1.name }
    }

    public func status(of name: String) -> Status? { name == me.name ? me.status : members[name]?.status }

    /// Updates still queued for piggybacking (none once news has been told often enough).
    public var pendingGossip: Int { broadcasts.count }

    /// The earliest time at which `tick` has something to do: the next probe, the current
    /// probe's timeout or end, a suspicion's expiry, push-pull, a join retry. The shell sleeps
    /// until then instead of ticking every few milliseconds (an idle router's cost is its
    /// wake-ups). A message moves it (an ack ends a probe, a probe due soon goes out early, a
    /// suspicion starts); the shell asks again after each, and moves its timer only earlier.
    /// (Reaping and relay pruning have no deadline of their own: they run on whatever tick
    /// comes next.)
    public var nextDeadline: UInt64 {
        guard me.status == .alive else { return .max }
        // With members, probes tick every period; join retries and push-pull are not urgent
        // and run in the first tick after they fall due, waking the process only a period late.
        let slack = members.isEmpty ? 0 : config.protocolPeriodMs
        var next = UInt64.max
        if !seeds.isEmpty { next = (lastJoinAttempt ?? 0) &+ config.joinRetryMs &+ slack }
        if let p = currentProbe {
            next = min(next, p.sentAt + (p.indirect ? config.protocolPeriodMs : config.probeTimeoutMs))
        } else if !members.isEmpty {
            next = min(next, nextProbeAt)
        }
        if !members.isEmpty { next = min(next, nextPushPullAt &+ slack) }
        for (_, s) in suspicions { next = min(next, s.start &+ suspicionTimeout(confirmations: s.confirmations.count)) }
        return next
    }

    // MARK: inputs

    /// Advances time: probes, suspicion timeouts, reaping, push-pull and join retries.
    public mutating func tick<R: RandomNumberGenerator>(now: UInt64, using rng: inout R) -> [Directive] {
        guard me.status == .alive else { return [] }
        countMembers()
        var out: [Directive] = []
        retryJoin(now: now, into: &out)
        probe(now: now, using: &rng, into: &out)
        expireSuspicions(now: now, into: &out)
        reap(now: now)
        relays = relays.filter { now < $0.value.at + config.protocolPeriodMs * 2 }
        if now >= nextPushPullAt, !members.isEmpty {
            nextPushPullAt = now + config.pushPullIntervalMs
            // Mostly a live member; one time in four a dead one, so a healed partition reconnects.
            let dead = members.values.filter { $0.status == .dead }.sorted { $0.name < $1.name }
            let pool = (!dead.isEmpty && Int.random(in: 0..<4, using: &rng) == 0) ? dead : aliveMembers
            if let target = pool.randomElement(using: &rng) {
                out.append(.send(to: target.address, .syncDigest(bucketHashes())))
            }
        }
        return out
    }

    /// Handles one message from `from` (an address).
    public mutating func receive<R: RandomNumberGenerator>(_ message: Message, from: String, now: UInt64, using rng: inout R) -> [Directive] {
        guard me.status == .alive else { return [] }
        countMembers()
        var out: [Directive] = []
        switch message {
        case .ping(let s, let gossip):
            apply(gossip, from: from, now: now, into: &out)
            out.append(.send(to: from, .ack(seq: s, gossip: takeGossip())))
        case .ack(let s, let gossip):
            apply(gossip, from: from, now: now, into: &out)
            if let p = currentProbe, p.seq == s { currentProbe = nil }
            if let relay = relays.removeValue(forKey: s) {
                out.append(.send(to: relay.requester, .ack(seq: relay.seq, gossip: takeGossip())))
            }
        case .pingReq(let s, let target, let gossip):
            apply(gossip, from: from, now: now, into: &out)
            if let t = members[target] {
                seq += 1
                relays[seq] = (from, s, now)
                out.append(.send(to: t.address, .ping(seq: seq, gossip: takeGossip())))
            }
        case .join(let joiner):
            apply([joiner], from: from, now: now, into: &out)
            out.append(.send(to: from, .sync(fullState(), reply: false)))
        case .sync(let state, let reply):
            apply(state, from: from, now: now, into: &out, gossipNew: false)
            if reply { out.append(.send(to: from, .sync(fullState(), reply: false))) }
        case .syncDigest(let theirs):
            let mine = bucketHashes()
            guard theirs.count == mine.count else { break }
            let differing = VectorSummary.differing(mine, theirs)
            if differing != 0 { out.append(.send(to: from, .syncBuckets(mask: differing, members: members(in: differing), reply: true))) }
        case .syncBuckets(let mask, let state, let reply):
            apply(state, from: from, now: now, into: &out)
            if reply { out.append(.send(to: from, .syncBuckets(mask: mask, members: members(in: mask), reply: false))) }
        }
        out += probeIfDueSoon(now: now, using: &rng)
        return out
    }

    /// On a wake-up for something else (a message): the probe due within `probeEarlyMs`, if any,
    /// goes out now instead of on a timer of its own.
    public mutating func probeIfDueSoon<R: RandomNumberGenerator>(now: UInt64, using rng: inout R) -> [Directive] {
        guard me.status == .alive, currentProbe == nil, config.probeEarlyMs > 0, !members.isEmpty else { return [] }
        var out: [Directive] = []
        probe(now: now, using: &rng, into: &out)
        return out
    }

    /// Leaves the cluster: tells a few members at once; gossip does the rest.
    public mutating func leave(now: UInt64) -> [Directive] {
        me.incarnation = me.incarnation == .max ? .max : me.incarnation + 1
        me.status = .left
        let note = Message.sync([me], reply: false)
        return aliveMembers.prefix(max(3, config.indirectProbes + 1)).map { .send(to: $0.address, note) }
    }

    // MARK: probing

    /// Seeds that are not alive or suspect members are sent a join, at most every
    /// `joinRetryMs` (checked no more often either: the check costs O(members)).
    private mutating func retryJoin(now: UInt64, into out: inout [Directive]) {
        guard lastJoinAttempt.map({ now >= $0 + config.joinRetryMs }) ?? true else { return }
        lastJoinAttempt = now
        let known = Set(members.values.filter { $0.status == .alive || $0.status == .suspect }.map(\.address))
        for seed in seeds where !known.contains(seed) { out.append(.send(to: seed, .join(me))) }
    }

    private mutating func probe<R: RandomNumberGenerator>(now: UInt64, using rng: inout R, into out: inout [Directive]) {
        if let p = currentProbe {
            if !p.indirect, now >= p.sentAt + config.probeTimeoutMs {
                currentProbe?.indirect = true
                let helpers = aliveMembers.filter { $0.name != p.target }.shuffled(using: &rng).prefix(config.indirectProbes)
                for h in helpers { out.append(.send(to: h.address, .pingReq(seq: p.seq, target: p.target, gossip: takeGossip()))) }
            }
            if now >= p.sentAt + config.protocolPeriodMs {
                currentProbe = nil
                if let m = members[p.target], m.status == .alive {
                    var s = m
                    s.status = .suspect
                    s.origin = me.name
                    apply([s], from: me.address, now: now, into: &out)
                }
            }
        }
        guard currentProbe == nil, now &+ config.probeEarlyMs >= nextProbeAt else { return }
        nextProbeAt = Cadence.next(after: nextProbeAt, every: config.protocolPeriodMs, now: now)
        if probeIndex >= probeOrder.count {
            probeOrder = aliveMembers.map(\.name).sorted().shuffled(using: &rng)
            probeIndex = 0
        }
        while probeIndex < probeOrder.count {
            let name = probeOrder[probeIndex]
            probeIndex += 1
            guard let m = members[name], m.status == .alive || m.status == .suspect else { continue }
            seq += 1
            currentProbe = (name, seq, now, false)
            var gossip = takeGossip()
            // Lifeguard's buddy system: a suspect hears of its suspicion from whoever probes it.
            if m.status == .suspect, !gossip.contains(where: { $0.name == m.name }) { gossip.append(m) }
            out.append(.send(to: m.address, .ping(seq: seq, gossip: gossip)))
            return
        }
    }

    /// Members alive or suspect, this node included, as of the start of the current tick or
    /// message: suspicion timeouts and gossip retransmits scale with it, and counting it for
    /// every gossip piece made each message cost O(members).
    private var clusterSize = 1
    private mutating func countMembers() {
        clusterSize = members.values.reduce(1) { $0 + ($1.status == .alive || $1.status == .suspect ? 1 : 0) }
    }

    /// Lifeguard: the timeout shrinks from max toward min as confirmations come in.
    private func suspicionTimeout(confirmations: Int) -> UInt64 {
        let n = Double(max(clusterSize, 2))
        let minMs = max(1, config.suspicionMult * log10(n)) * Double(config.protocolPeriodMs)
        let maxMs = config.suspicionMaxMult * minMs
        let k = Double(max(1, config.indirectProbes))
        let shrink = log(Double(confirmations) + 1) / log(k + 1)
        return UInt64(max(minMs, maxMs - (maxMs - minMs) * min(1, shrink)))
    }

    private mutating func expireSuspicions(now: UInt64, into out: inout [Directive]) {
        for name in suspicions.keys.sorted() {
            guard let s = suspicions[name], now >= s.start + suspicionTimeout(confirmations: s.confirmations.count) else { continue }
            suspicions[name] = nil
            guard var m = members[name], m.status == .suspect else { continue }
            m.status = .dead
            m.origin = me.name
            apply([m], from: me.address, now: now, into: &out)
        }
    }

    private mutating func reap(now: UInt64) {
        for (name, m) in members where (m.status == .dead || m.status == .left) && now >= (since[name] ?? now) + config.reapAfterMs {
            // (Order does not matter here: reaping emits nothing.)
            members[name] = nil
            since[name] = nil
        }
    }

    // MARK: gossip

    private func fullState() -> [Member] { [me] + members.values.sorted { $0.name < $1.name } }

    /// Which of the 64 push-pull buckets a member falls in.
    static func bucket(of name: String) -> Int { Int(FNV1a.hash(name) >> 58) }

    /// The hash of every bucket of the member table (this node included): a member's claim
    /// (name, generation, incarnation, status) mixed, XOR-ed over its bucket.
    func bucketHashes() -> [UInt64] {
        var out = [UInt64](repeating: 0, count: VectorSummary.bucketCount)
        func add(_ m: Member) {
            let claim = SplitMix64.mix(m.generation ^ SplitMix64.mix(m.incarnation &* 4 &+ UInt64(m.status.rank)))
            out[Self.bucket(of: m.name)] ^= SplitMix64.mix(FNV1a.hash(m.name) ^ claim)
        }
        add(me)
        for m in members.values { add(m) }
        return out
    }

    /// The members (this node included) of the buckets in `mask`, by name.
    private func members(in mask: UInt64) -> [Member] {
        fullState().filter { mask & (1 << UInt64(Self.bucket(of: $0.name))) != 0 }
    }

    /// Up to `maxGossipPerMessage` queued updates, least transmitted first.
    private mutating func takeGossip() -> [Member] {
        guard !broadcasts.isEmpty else { return [] }
        let limit = max(3, Int((config.retransmitMult * log10(Double(clusterSize + 1))).rounded(.up)))
        broadcasts.sort { $0.transmits < $1.transmits }
        let n = min(config.maxGossipPerMessage, broadcasts.count)
        var out: [Member] = []
        for i in 0..<n {
            out.append(broadcasts[i].member)
            broadcasts[i].transmits += 1
        }
        broadcasts.removeAll { $0.transmits >= limit }
        return out
    }

    private mutating func enqueue(_ m: Member) {
        broadcasts.removeAll { $0.member.name == m.name }
        broadcasts.append((m, 0))
    }

    /// Merges claims, by generation then incarnation then status (SWIM's precedence); refutes
    /// claims that this node is suspect or dead.
    ///
    /// `gossipNew: false` (a join's answer, or push-pull from an older version: a whole member
    /// table): members unknown here are taken without being gossiped on. The sender knew them,
    /// and so does the mesh around it. A router joining 1,000 gossiped all of them a dozen
    /// times each, to members that had them all along: at 1,000 simulated routers, with a
    /// restart every two seconds, most of the mesh's traffic. Changes to known members are
    /// gossiped as always, and push-pull's buckets gossip everything (they are how a join storm
    /// or a healed partition spreads).
    private mutating func apply(_ claims: [Member], from: String, now: UInt64, into out: inout [Directive], gossipNew: Bool = true) {
        for claim in claims {
            if claim.name == me.name {
                refuteIfNeeded(claim)
                continue
            }
            guard let current = members[claim.name] else {
                members[claim.name] = claim
                since[claim.name] = now
                if claim.status == .suspect { suspicions[claim.name] = (now, []) }
                if gossipNew { enqueue(claim) }
                out.append(.changed(claim))
                continue
            }
            if claim.generation < current.generation { continue }
            let newer: Bool
            if claim.generation > current.generation {
                newer = true
            } else if current.status == .left {
                newer = false  // leaving is final for a generation
            } else if claim.incarnation != current.incarnation {
                newer = claim.incarnation > current.incarnation
            } else {
                newer = claim.status > current.status
            }
            guard newer else {
                // The same suspicion raised by another node: a Lifeguard confirmation.
                if claim.status == .suspect, current.status == .suspect, claim.incarnation == current.incarnation,
                   claim.origin != me.name, !claim.origin.isEmpty {
                    suspicions[claim.name]?.confirmations.insert(claim.origin)
                }
                continue
            }
            members[claim.name] = claim
            since[claim.name] = now
            if claim.status == .suspect {
                suspicions[claim.name] = (now, claim.origin == me.name || claim.origin.isEmpty ? [] : [claim.origin])
            } else {
                suspicions[claim.name] = nil
            }
            enqueue(claim)
            out.append(.changed(claim))
        }
    }

    private mutating func refuteIfNeeded(_ claim: Member) {
        guard claim.generation == me.generation, claim.status != .alive, claim.incarnation >= me.incarnation else { return }
        // Incarnations come off the wire: saturate rather than trap on a hostile UInt64.max.
        me.incarnation = claim.incarnation == .max ? .max : claim.incarnation + 1
        me.origin = me.name
        enqueue(me)
    }
}

// log10 and log without Foundation.
func log(_ x: Double) -> Double {
    // ln(x) by reducing to [1, 2) and a short series; accurate to ~1e-9, enough for timeouts.
    guard x > 0 else { return -Double.infinity }
    var m = x
    var e = 0.0
    while m >= 2 { m /= 2; e += 1 }
    while m < 1 { m *= 2; e -= 1 }
    let y = (m - 1) / (m + 1)
    let y2 = y * y
    var term = y, sum = 0.0, k = 1.0
    for _ in 0..<30 { sum += term / k; term *= y2; k += 2 }
    return 2 * sum + e * 0.693_147_180_559_945_3
}

func log10(_ x: Double) -> Double { log(x) / 2.302_585_092_994_046 }
