import Mesh
import NIOCore
import Policies
import Synchronization

/// Ships cache-aware routing decisions to the other routers within about a millisecond, so a
/// conversation whose turns alternate between routers still finds the worker holding its
/// prefix. Decisions are batched: the first one after a flush schedules the next flush 1 ms
/// later; an idle router sends nothing. Losing a datagram loses only those hints.
///
/// A router that joins (or restarts, or comes back from a partition) is sent every tree in
/// full, so it routes conversations it has never seen to the workers holding them from its
/// first request. Last-use stamps travel as ages (milliseconds ago), because each router's
/// clock is its own monotonic one.
final class TreeSync: Sendable {
    static let topic = "tree"
    private let registry: WorkerRegistry
    private let mesh: MeshService
    private let loop: any EventLoop
    private let clock: @Sendable () -> UInt64
    private let scheduled = Atomic<Bool>(false)
    private let versions = Mutex<[String: UInt64]>([:])

    init(registry: WorkerRegistry, mesh: MeshService, loop: any EventLoop, clock: @escaping @Sendable () -> UInt64) {
        self.registry = registry
        self.mesh = mesh
        self.loop = loop
        self.clock = clock
        mesh.onCustom { [weak self] topic, payload in
            guard topic == Self.topic, let self else { return }
            self.receive(payload)
        }
        mesh.onMemberAlive { [weak self] address in self?.sendEverything(to: address) }
    }

    /// Every model's whole tree, to one router that just became alive.
    private func sendEverything(to address: String) {
        loop.execute { [self] in
            let now = clock()
            for s in registry.policySummaries(since: [:]) {
                for payload in Self.encode(model: s.model, s.delta, now: now) { mesh.send(topic: Self.topic, payload: payload, to: address) }
            }
        }
    }

    /// A cache-aware decision was made here.
    func noteDecision() {
        guard !scheduled.load(ordering: .relaxed), scheduled.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return }
        loop.scheduleTask(in: .milliseconds(1)) { [self] in
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

    // MARK: encoding (model, then entries of owner, age, block-hash path), in datagram-sized chunks

    static func encode(model: String, _ delta: TreeDelta<UInt64, String>, now: UInt64) -> [[UInt8]] {
        var chunks: [[UInt8]] = []
        var out: [UInt8] = []
        var count = 0
        func start() {
            out = []
            count = 0
            appendString(model, to: &out)
            out += [0, 0, 0, 0]  // entry count, filled in at the end
        }
        func finish() {
            guard count > 0 else { return }
            let n = UInt32(count)
            let at = 2 + Array(model.utf8).count
            out[at] = UInt8(n >> 24); out[at + 1] = UInt8(n >> 16 & 0xFF); out[at + 2] = UInt8(n >> 8 & 0xFF); out[at + 3] = UInt8(n & 0xFF)
            chunks.append(out)
        }
        start()
        for u in delta.updates {
            let size = 2 + u.owner.utf8.count + 8 + 4 + u.path.count * 8
            guard size < WireCodec.maxPayload - 512 else { continue }  // a prompt too long to ship
            if out.count + size > WireCodec.maxPayload - 256 { finish(); start() }
            appendString(u.owner, to: &out)
            appendU64(now > u.lastUse ? now - u.lastUse : 0, to: &out)
            let n = UInt32(u.path.count)
            out += [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)]
            for h in u.path { appendU64(h, to: &out) }
            count += 1
        }
        finish()
        return chunks
    }

    static func decode(_ b: [UInt8], now: UInt64) -> (String, TreeDelta<UInt64, String>)? {
        var i = 0
        func u32() -> Int? {
            guard i + 4 <= b.count else { return nil }
            defer { i += 4 }
            return Int(b[i]) << 24 | Int(b[i + 1]) << 16 | Int(b[i + 2]) << 8 | Int(b[i + 3])
        }
        func u64() -> UInt64? {
            guard i + 8 <= b.count else { return nil }
            var v: UInt64 = 0
            for k in 0..<8 { v = v << 8 | UInt64(b[i + k]) }
            i += 8
            return v
        }
        func string() -> String? {
            guard i + 2 <= b.count else { return nil }
            let n = Int(b[i]) << 8 | Int(b[i + 1])
            i += 2
            guard i + n <= b.count else { return nil }
            defer { i += n }
            return String(validating: b[i..<(i + n)], as: UTF8.self)
        }
        guard let model = string(), let count = u32(), count <= 100_000 else { return nil }
        var updates: [TreeUpdate<UInt64, String>] = []
        for _ in 0..<count {
            guard let owner = string(), let age = u64(), let n = u32(), n <= (b.count - i) / 8 else { return nil }
            var path: [UInt64] = []
            path.reserveCapacity(n)
            for _ in 0..<n { guard let h = u64() else { return nil }; path.append(h) }
            updates.append(TreeUpdate(owner: owner, path: path, lastUse: now > age ? now - age : 0))
        }
        guard i == b.count else { return nil }
        return (model, TreeDelta(fromVersion: 0, toVersion: 0, isFull: false, updates: updates))
    }

    private static func appendString(_ s: String, to out: inout [UInt8]) {
        let u = Array(s.utf8.prefix(65535))
        out += [UInt8(u.count >> 8), UInt8(u.count & 0xFF)]
        out += u
    }

    private static func appendU64(_ v: UInt64, to out: inout [UInt8]) {
        withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) }
    }
}
