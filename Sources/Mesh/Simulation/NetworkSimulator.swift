import MeshCore
import Primitives

/// A seeded, deterministic network of mesh nodes (`MeshNode`: SWIM and the replicated stores)
/// on a virtual clock: loss, delay, duplication, reordering (random delays), partitions, and a
/// skewed wall clock per node. Everything random comes from one SplitMix64, so a seed replays
/// a run exactly. Used by the simulation tests and the `smg-mesh-bench` program.
public struct NetworkSimulator {
    public typealias Rng = SplitMix64

    public struct Delivery: Comparable {
        public let at: UInt64
        public let order: UInt64
        public let to: String
        public let from: String
        public let message: MeshNode.Message
        public init(at: UInt64, order: UInt64, to: String, from: String, message: MeshNode.Message) {
            self.at = at
            self.order = order
            self.to = to
            self.from = from
            self.message = message
        }
        /// Time order; ties in send order.
        public static func < (a: Delivery, b: Delivery) -> Bool { (a.at, a.order) < (b.at, b.order) }
        public static func == (a: Delivery, b: Delivery) -> Bool { (a.at, a.order) == (b.at, b.order) }
    }

    public let seed: UInt64
    public var rng: Rng
    public var now: UInt64 = 0
    public var nodes: [String: MeshNode] = [:]
    /// Each node's wall clock is the virtual clock plus its own skew (HLC stamps must cope).
    public var skewMs: [String: UInt64] = [:]
    public static let epochMs: UInt64 = 1_800_000_000_000
    public var crashed: Set<String> = []
    public var queue = MinHeap<Delivery>()
    var order: UInt64 = 0
    public var lossRate = 0.0
    public var duplicateRate = 0.0
    public var delayMs: ClosedRange<UInt64> = 1...20
    /// Pairs (a, b) that cannot reach each other, both ways.
    public var cut: Set<[String]> = []
    public var messagesSent = 0
    public var bytesSent = 0
    /// Bytes sent by message kind (`kind(of:)`), to see where the traffic goes.
    public var bytesByKind: [String: Int] = [:]
    /// Membership claims piggybacked on pings and acks, by sender (claims about itself not counted).
    public var gossipSent: [String: Int] = [:]
    public let tickMs: UInt64 = 50
    /// Tick a node only once its `nextDeadline` has come, as the real shell's timer does (it
    /// sleeps until then); otherwise every node ticks every `tickMs`.
    public var tickOnlyAtDeadlines = false
    /// Ticks run, over all nodes.
    public var ticksRun = 0
    /// Ticks that sent nothing: with `tickOnlyAtDeadlines`, a deadline that was no longer due
    /// when it came (each is a wake-up of a real router for nothing).
    public var idleTicks = 0
    private var sortedNames: [String] = []

    public init(seed: UInt64) {
        self.seed = seed
        self.rng = Rng(seed: seed)
    }

    public static func name(_ i: Int) -> String { "n\(i)" }

    public mutating func addNode(_ name: String, seeds: [String], config: SwimNode.Config, generation: UInt64? = nil) {
        var c = MeshNode.Config()
        c.swim = config
        addNode(name, seeds: seeds, meshConfig: c, generation: generation)
    }

    public mutating func addNode(_ name: String, seeds: [String], meshConfig: MeshNode.Config, generation: UInt64? = nil) {
        // Generations must grow across restarts of a name: the real node uses its start time.
        let gen = generation ?? (now << 16 | (rng.next() & 0xFFFF))
        nodes[name] = MeshNode(name: name, address: name, generation: gen, origin: MeshNode.origin(name: name, generation: gen), seeds: seeds, config: meshConfig)
        skewMs[name] = UInt64.random(in: 0...500, using: &rng)
        crashed.remove(name)
    }

    public func wallMs(_ name: String) -> UInt64 { Self.epochMs + now + (skewMs[name] ?? 0) }

    /// A local write on `name` (nil deletes), pushed as the real node would.
    public mutating func write(on name: String, _ store: String, _ key: String, _ value: [UInt8]?) {
        guard !crashed.contains(name), var node = nodes[name] else { return }
        let out = node.write(store, key, value, wallMs: wallMs(name))
        nodes[name] = node
        handle(out, from: name)
    }

    public mutating func crash(_ name: String) { crashed.insert(name) }

    public mutating func partition(_ a: [String], _ b: [String]) {
        for x in a { for y in b { cut.insert([x, y]); cut.insert([y, x]) } }
    }

    public mutating func heal() { cut.removeAll() }

    public mutating func handle(_ directives: [MeshNode.Output], from: String) {
        for d in directives {
            guard case .send(let to, let message) = d else { continue }
            messagesSent += 1
            let size = Self.approximateSize(message)
            bytesSent += size
            bytesByKind[Self.kind(of: message), default: 0] += size
            switch message {
            case .swim(.ping(_, let g)), .swim(.ack(_, let g)), .swim(.pingReq(_, _, let g)):
                gossipSent[from, default: 0] += g.count { $0.name != from }
            default: break
            }
            if cut.contains([from, to]) { continue }
            if Double.random(in: 0..<1, using: &rng) < lossRate { continue }
            let copies = Double.random(in: 0..<1, using: &rng) < duplicateRate ? 2 : 1
            for _ in 0..<copies {
                order += 1
                queue.push(Delivery(at: now + UInt64.random(in: delayMs, using: &rng), order: order, to: to, from: from, message: message))
            }
        }
    }

    /// Runs the virtual clock forward by `ms`.
    ///
    /// Messages are delivered at their own times, in time order (ties in send order), and what
    /// they make a node send is delivered within the same step when it falls due before the
    /// next tick: a round trip takes its network delays, not whole ticks. (Quantized to 50 ms
    /// ticks, a ping-req's four hops took 200 ms, longer than a 250 ms period leaves after the
    /// probe timeout, so every lost direct ping became a false suspicion.) Nodes tick every 50
    /// ms, or at their deadlines (`tickOnlyAtDeadlines`), as the real shell's timer does.
    public mutating func run(forMs ms: UInt64) {
        let end = now + ms
        while now < end {
            let tickAt = now + tickMs
            while let next = queue.first, next.at <= tickAt {
                let d = queue.pop()!
                now = d.at
                // Nodes are mutated in place (`nodes[name]!.…`): a copy taken out of the
                // dictionary and put back copied the node's whole state on every message and
                // tick, which made the simulation quadratic in its size.
                guard !crashed.contains(d.to), nodes[d.to] != nil else { continue }
                let wall = Self.epochMs + d.at + (skewMs[d.to] ?? 0)
                let out = nodes[d.to]!.receive(d.message, from: d.from, now: d.at, wallMs: wall, using: &rng)
                handle(out, from: d.to)
            }
            now = tickAt
            for name in order(of: nodes) where !crashed.contains(name) {
                if tickOnlyAtDeadlines, now < nodes[name]!.nextDeadline { continue }
                ticksRun += 1
                let out = nodes[name]!.tick(now: now, using: &rng)
                if out.isEmpty { idleTicks += 1 }
                handle(out, from: name)
            }
        }
    }

    /// The nodes in name order (what makes a run reproducible), sorted again only when the set
    /// of names changed.
    private mutating func order(of nodes: [String: MeshNode]) -> [String] {
        if sortedNames.count != nodes.count || !sortedNames.allSatisfy({ nodes[$0] != nil }) { sortedNames = nodes.keys.sorted() }
        return sortedNames
    }

    /// Runs until `condition` holds or `limitMs` passes; returns the virtual time it took.
    public mutating func run(until condition: (NetworkSimulator) -> Bool, limitMs: UInt64) -> UInt64? {
        let start = now
        while now - start < limitMs {
            if condition(self) { return now - start }
            run(forMs: tickMs)
        }
        return condition(self) ? now - start : nil
    }

    /// Every running node sees every other running node alive, and nobody else.
    public func converged(alive expected: Set<String>) -> Bool {
        for name in expected where !crashed.contains(name) {
            guard let node = nodes[name] else { return false }
            let seen = Set(node.members.values.filter { $0.status == .alive }.map(\.name))
            if seen != expected.subtracting([name]) { return false }
        }
        return true
    }

    /// A message's kind, as the wire format names it.
    public static func kind(of m: MeshNode.Message) -> String {
        switch m {
        case .swim(.ping): "ping"
        case .swim(.ack): "ack"
        case .swim(.pingReq): "ping-req"
        case .swim(.join): "join"
        case .swim(.sync): "sync"
        case .swim(.syncDigest): "sync-digest"
        case .swim(.syncBuckets): "sync-buckets"
        case .push: "push"
        case .digest: "digest"
        case .answer: "answer"
        case .state: "state"
        }
    }

    /// What each packet adds to its message on the wire: the envelope (the sender's address, at
    /// most 21 bytes as "198.18.0.11:39527"; its generation and packet counter) and the seal
    /// (version, key id, nonce and tag: 45 bytes).
    public static let packetOverhead = 2 + 21 + 16 + 45

    /// Bytes on the wire, roughly (the codec's field sizes, before sealing).
    public static func approximateSize(_ m: MeshNode.Message) -> Int {
        func size(_ members: [SwimNode.Member]) -> Int { members.reduce(0) { $0 + 24 + $1.name.utf8.count + $1.address.utf8.count } }
        func size(_ entries: [ReplicatedEntry]) -> Int {
            entries.reduce(0) { $0 + 44 + $1.store.utf8.count + $1.key.utf8.count + ($1.value?.count ?? 0) + ($1.seen?.counters.count ?? 0) * 16 }
        }
        switch m {
        case .swim(.ping(_, let g)), .swim(.ack(_, let g)): return 12 + size(g)
        case .swim(.pingReq(_, let t, let g)): return 12 + t.utf8.count + size(g)
        case .swim(.join(let member)): return 8 + size([member])
        case .swim(.sync(let all, _)): return 8 + size(all)
        case .swim(.syncDigest(let b)): return 8 + 1 + b.count * 8
        case .swim(.syncBuckets(_, let all, _)): return 8 + 9 + size(all)
        case .push(let e): return 4 + size(e)
        case .digest(let d, _):
            switch d.vector {
            case .whole(let v): return 24 + (v.counters.count + d.cloud.count) * 16
            case .summary(let s): return 24 + 8 + 1 + s.buckets.count * 8 + 8 + 2 + (s.exact.counters.count + d.cloud.count) * 16
            }
        case .answer(let e, let v, let r): return 8 + size(e) + (v.counters.count + r.counters.count) * 16
        case .state(let e, let c, _): return 8 + size(e) + (c.vector.counters.count + c.cloud.count + c.retired.count) * 16
        }
    }
}
