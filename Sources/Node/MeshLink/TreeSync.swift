import Logging
import Mesh
import NIOCore
import NIOPosix
import Policies
import Synchronization

/// Ships cache-aware routing decisions to the other routers within about 10 ms, so a
/// conversation whose turns alternate between routers still finds the worker holding its
/// prefix. Decisions are batched: the first one after a flush schedules the next flush
/// `batchWindow` later, on the loop that made the decision (no hop to another thread); an
/// idle router sends nothing. Losing a datagram loses only those hints. Last-use
/// stamps travel as ages (milliseconds ago), because each router's clock is its own monotonic one.
///
/// A router that joins (or restarts, or comes back from a partition) is sent every tree in
/// full by `TreeTransfers`.
final class TreeSync: Sendable {
    static let topic = "tree"
    /// How long decisions gather before they are sent. Every flush is a timer wake-up here and
    /// a datagram (a wake-up) on each peer; at 1,000 requests/s a 1 ms window made that one of
    /// each per request, a third of a meshed router's CPU at that rate, where 10 ms costs a tenth
    /// of it (docs/benchmarks.md, "What the mesh costs per request"). A conversation's next turn
    /// comes long after 10 ms: its prefix is known everywhere by then.
    static let batchWindow = TimeAmount.milliseconds(10)
    private let registry: WorkerRegistry
    private let mesh: MeshService
    private let loop: any EventLoop
    private let clock: @Sendable () -> UInt64
    private let scheduled = Atomic<Bool>(false)
    private let versions = Mutex<[String: UInt64]>([:])

    init(registry: WorkerRegistry, mesh: MeshService, loop: any EventLoop, logger: Logger, clock: @escaping @Sendable () -> UInt64) {
        self.registry = registry
        self.mesh = mesh
        self.loop = loop
        self.clock = clock
        // Held by the two handlers below, which are all that use it.
        let transfers = TreeTransfers(registry: registry, mesh: mesh, loop: loop, logger: logger, clock: clock)
        mesh.onCustom { [weak self] topic, payload, _ in
            switch topic {
            case Self.topic: self?.receive(payload)
            case TreeTransfers.topic: _ = transfers.receive(payload)
            default: return
            }
        }
        mesh.onMemberAlive { address in transfers.start(to: address) }
    }

    /// A cache-aware decision was made here.
    func noteDecision() {
        guard !scheduled.load(ordering: .relaxed), scheduled.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return }
        (MultiThreadedEventLoopGroup.currentEventLoop ?? loop).scheduleTask(in: Self.batchWindow) { [self] in
            scheduled.store(false, ordering: .releasing)
            flush()
        }
    }

    private func flush() {
        let since = versions.withLock { $0 }
        let summaries = registry.policySummaries(since: since)
        guard !summaries.isEmpty else { return }
        versions.withLock { v in for s in summaries { v[s.model] = s.version } }
        guard mesh.hasPeers else { return }
        let now = clock()
        for s in summaries {
            for payload in Self.encode(model: s.model, s.delta, now: now) { mesh.broadcast(topic: Self.topic, payload: payload) }
        }
    }

    private func receive(_ payload: [UInt8]) {
        guard let (model, delta) = Self.decode(payload, now: clock()) else { return }
        registry.applyPolicySummary(model: model, delta)
    }

    // MARK: encoding (model, entry count, then entries of owner, age, block-hash path) in
    // datagram-sized chunks, with the mesh's own wire primitives

    static func encode(model: String, _ delta: TreeDelta<UInt64, String>, now: UInt64) -> [[UInt8]] {
        var chunks: [[UInt8]] = []
        var entries = WireCodec.Writer()
        var count = 0
        let header = 2 + model.utf8.count + 4
        func finish() {
            guard count > 0 else { return }
            var w = WireCodec.Writer()
            w.string(model)
            w.u32(count)
            w.bytes += entries.bytes
            chunks.append(w.bytes)
            entries = WireCodec.Writer()
            count = 0
        }
        for u in delta.updates {
            let size = 2 + u.owner.utf8.count + 8 + 4 + u.path.count * 8
            guard size < WireCodec.maxPayload - 512 else { continue }  // a prompt too long to ship
            if header + entries.bytes.count + size > WireCodec.maxPayload - 256 { finish() }
            entries.string(u.owner)
            entries.u64(now > u.lastUse ? now - u.lastUse : 0)
            entries.u32(u.path.count)
            for h in u.path { entries.u64(h) }
            count += 1
        }
        finish()
        return chunks
    }

    static func decode(_ b: [UInt8], now: UInt64) -> (String, TreeDelta<UInt64, String>)? {
        var r = WireCodec.Reader(b)
        guard let model = r.string(), let count = r.u32(), count <= 100_000 else { return nil }
        var updates: [TreeUpdate<UInt64, String>] = []
        for _ in 0..<count {
            guard let owner = r.string(), let age = r.u64(), let n = r.u32(), n <= r.left / 8 else { return nil }
            var path: [UInt64] = []
            path.reserveCapacity(n)
            for _ in 0..<n { guard let h = r.u64() else { return nil }; path.append(h) }
            updates.append(TreeUpdate(owner: owner, path: path, lastUse: now > age ? now - age : 0))
        }
        guard r.atEnd else { return nil }
        return (model, TreeDelta(fromVersion: 0, toVersion: 0, isFull: false, updates: updates))
    }
}
