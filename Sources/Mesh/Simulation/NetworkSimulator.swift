import MeshCore
import Primitives

/// A seeded, deterministic network of mesh nodes (`MeshNode`: SWIM and the replicated stores)
/// on a virtual clock: loss, delay, duplication, reordering (random delays), partitions, and a
/// skewed wall clock per node. Everything random comes from one SplitMix64, so a seed replays
/// a run exactly. Used by the simulation tests and the `smg-mesh-bench` program.
public struct NetworkSimulator {
    public typealias Rng = SplitMix64

    public struct Delivery {
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
    }

    public let seed: UInt64
    public var rng: Rng
    public var now: UInt64 = 0
    public var nodes: [String: MeshNode] = [:]
    /// Each node's wall clock is the virtual clock plus its own skew (HLC stamps must cope).
    public var skewMs: [String: UInt64] = [:]
    public static let epochMs: UInt64 = 1_800_000_000_000
    public var crashed: Set<String> = []
    public var queue: [Delivery] = []
    var order: UInt64 = 0
    public var lossRate = 0.0
    public var duplicateRate = 0.0
    public var delayMs: ClosedRange<UInt64> = 1...20
    /// Pairs (a, b) that cannot reach each other, both ways.
    public var cut: Set<[String]> = []
    public var messagesSent = 0
    public var bytesSent = 0
    public let tickMs: UInt64 = 50
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
        nodes[name] = MeshNode(name: name, address: name, generation: gen, origin: FNV1a.hash(name) ^ gen, seeds: seeds, config: meshConfig)
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
            bytesSent += Self.approximateSize(message)
            if cut.contains([from, to]) { continue }
            if Double.random(in: 0..<1, using: &rng) < lossRate { continue }
            let copies = Double.random(in: 0..<1, using: &rng) < duplicateRate ? 2 : 1
            for _ in 0..<copies {
                order += 1
                queue.append(Delivery(at: now + UInt64.random(in: delayMs, using: &rng), order: order, to: to, from: from, message: message))
            }
        }
    }

    /// Runs the virtual clock forward by `ms`.
    public mutating func run(forMs ms: UInt64) {
        let end = now + ms
        while now < end {
            now += tickMs
            // Deliver everything due, in time order (ties by send order).
            queue.sort { ($0.at, $0.order) < ($1.at, $1.order) }
            var due = 0
            while due < queue.count, queue[due].at <= now { due += 1 }
            let batch = queue[..<due]
            queue.removeFirst(due)
            // Nodes are mutated in place (`nodes[name]!.…`): a copy taken out of the dictionary
            // and put back copied the node's whole state on every message and tick, which made
            // the simulation quadratic in its size.
            for d in batch where !crashed.contains(d.to) {
                guard nodes[d.to] != nil else { continue }
                let wall = Self.epochMs + d.at + (skewMs[d.to] ?? 0)
                let out = nodes[d.to]!.receive(d.message, from: d.from, now: d.at, wallMs: wall, using: &rng)
                handle(out, from: d.to)
            }
            for name in order(of: nodes) where !crashed.contains(name) {
                let out = nodes[name]!.tick(now: now, using: &rng)
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
        case .push(let e): return 4 + size(e)
        case .digest(let d, _): return 24 + (d.context.vector.counters.count + d.context.cloud.count) * 16
        case .answer(let e, let v): return 8 + size(e) + v.counters.count * 16
        case .state(let e, let c, _): return 8 + size(e) + (c.vector.counters.count + c.cloud.count) * 16
        }
    }
}
