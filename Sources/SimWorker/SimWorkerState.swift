import NIOCore
import Primitives
import Synchronization

/// State shared by all connections of one simulated worker: its prefix cache, counters that
/// tests read through `GET /sim/stats`, and the seeded randomness for failure injection.
final class SimWorkerState: Sendable {
    struct Counters {
        var requests = 0
        /// `GET /health` calls: how tests see a router's health checker at work (or stopped).
        var healthChecks = 0
        var active = 0
        /// The most requests this worker had in flight at once (how well routers spread load).
        var peakActive = 0
        /// HTTP/1.1 connections and HTTP/2 streams open now (each stream is served as a connection).
        var openConnections = 0
        /// `--http2`: connections that spoke HTTP/2 (ever, and now) and the streams they carried.
        var http2Connections = 0
        var openHTTP2Connections = 0
        var http2Streams = 0
        var abortedStreams = 0
        var completed = 0
        var failuresInjected = 0
        var promptTokens = 0
        var cachedTokens = 0
    }

    let options: SimWorkerOptions
    private let cache: Mutex<PrefixCache>
    private let counters = Mutex(Counters())
    private let rng: Mutex<UInt64>
    private let ids = Mutex(0)
    /// Failure injection that tests may change at run time (`POST /sim/config`).
    private let faults: Mutex<(failure: Double, hang: Double, drop: Double, cut: Double)>

    /// What the worker says about its engine in `GET /v1/loads` beyond the requests it has in
    /// flight, and whether its load endpoints answer at all. Tests change it at run time.
    struct EngineReport: Sendable {
        /// Requests the engine has queued (summed over its data-parallel ranks).
        var waiting: Int
        /// KV-cache token usage, 0...1, on every rank.
        var tokenUsage: Double
        /// `/v1/loads` and `/get_load` never answer (a stuck scheduler's endpoints).
        var loadsStalled = false
        /// `/health` and `/health_generate` never answer.
        var healthStalled = false
        /// Time to the first token and between tokens, multiplied.
        var slowdown = 1.0
    }
    private let engine: Mutex<EngineReport>

    init(options: SimWorkerOptions) {
        self.options = options
        self.cache = Mutex(PrefixCache(capacityBlocks: options.cacheCapacityBlocks, blockSize: options.cacheBlockSize))
        self.rng = Mutex(options.seed == 0 ? 1 : options.seed)
        self.faults = Mutex((options.failureRate, options.hangRate, options.dropRate, options.cutRate))
        self.engine = Mutex(EngineReport(waiting: options.reportedWaiting, tokenUsage: options.reportedTokenUsage))
    }

    // MARK: the engine's batch (`--max-running`)

    /// A request waiting for a place in the batch: started on its own loop when one frees.
    struct Queued: Sendable {
        let loop: any EventLoop
        let start: @Sendable () -> Void
    }
    private let batch = Mutex<(running: Int, queue: [Queued])>((0, []))

    /// Takes a place in the batch for a request, or queues `start` (on `loop`) until one frees,
    /// as an engine does with `--max-running` requests at once (0: no limit).
    func admit(on loop: any EventLoop, _ start: @escaping @Sendable () -> Void) {
        let now: Bool = batch.withLock { b in
            guard options.maxRunning == 0 || b.running < options.maxRunning else {
                b.queue.append(Queued(loop: loop, start: start))
                return false
            }
            b.running += 1
            return true
        }
        if now { start() }
    }

    /// A request left the batch (answered or abandoned): the next queued one takes its place.
    func leaveBatch() {
        let next: Queued? = batch.withLock { b in
            if b.queue.isEmpty {
                b.running = max(0, b.running - 1)
                return nil
            }
            return b.queue.removeFirst()
        }
        if let next { next.loop.execute(next.start) }
    }

    /// Requests queued behind the batch.
    var queued: Int { batch.withLock { $0.queue.count } }

    var engineReport: EngineReport { engine.withLock { $0 } }
    func changeEngineReport(_ body: (inout EngineReport) -> Void) { engine.withLock { body(&$0) } }

    var faultRates: (failure: Double, hang: Double, drop: Double, cut: Double) { faults.withLock { $0 } }
    func setFaultRates(failure: Double?, hang: Double?, drop: Double?, cut: Double? = nil) {
        faults.withLock { f in
            if let failure { f.failure = failure }
            if let hang { f.hang = hang }
            if let drop { f.drop = drop }
            if let cut { f.cut = cut }
        }
    }

    func update<T>(_ body: (inout Counters) -> T) -> T { counters.withLock { body(&$0) } }
    var snapshot: Counters { counters.withLock { $0 } }

    func cachedPrefix(of prompt: [UInt8]) -> Int { cache.withLock { $0.lookupAndInsert(prompt) } }
    func flushCache() { cache.withLock { $0.flush() } }

    func nextID() -> Int { ids.withLock { $0 += 1; return $0 } }

    /// The bootstrap rooms a prefill worker was sent (the last 100,000), each with the
    /// data-parallel rank that computed it (-1: none named).
    private let rooms = Mutex<(ranks: [UInt64: Int], order: [UInt64])>(([:], []))
    func addRooms(_ new: [UInt64], rank: Int?) {
        rooms.withLock { r in
            for room in new where r.ranks.updateValue(rank ?? -1, forKey: room) == nil { r.order.append(room) }
            if r.order.count > 100_000 {
                for old in r.order.prefix(r.order.count - 100_000) { r.ranks[old] = nil }
                r.order.removeFirst(r.order.count - 100_000)
            }
        }
    }
    /// The rank that computed `room` (-1: none named), nil when the room never arrived.
    func roomRank(_ room: UInt64) -> Int? { rooms.withLock { $0.ranks[room] } }

    /// A uniform draw in [0, 1) from a SplitMix64 stream.
    func draw() -> Double {
        rng.withLock { s in
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            return Double(z >> 11) / Double(1 << 53)
        }
    }
}
