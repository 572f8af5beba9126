import Policies
import Reliability
import Synchronization

/// One worker known to the router. Identity and settings are immutable; the counters the hot
/// path updates are atomics, so no lock is taken per request.
public final class Worker: Sendable {
    public let id: String
    public let url: WorkerURL
    /// The model this worker serves, learned from its `/v1/models` unless given when added.
    private let _modelID: Mutex<String?>
    public let role: WorkerRole
    /// `worker_type` in the worker APIs.
    public var workerType: String { role.rawValue }
    /// A prefill worker's KV bootstrap port, sent to decode workers as `bootstrap_port`.
    public let bootstrapPort: Int?
    private let settings: Mutex<(labels: [String: String], apiKey: String?)>
    private let breaker: Mutex<CircuitBreaker>
    private let health: Mutex<HealthState>
    /// Set when the worker is being removed: it finishes what it has and gets nothing new.
    private let _draining = Atomic<Bool>(false)
    /// Mirrors `health` for the hot path.
    private let _healthy = Atomic<Bool>(false)
    private let _inFlight = Atomic<Int>(0)
    private let _served = Atomic<Int>(0)
    /// The worker's own load report (`/get_load`), -1 until one arrives.
    private let _reportedLoad = Atomic<Int>(-1)
    /// `--upstream-http2`: it answered HTTP/2 when registered and has not refused it since
    /// (the pools decide per call; this is what `/workers` and the metrics show).
    private let _speaksHTTP2 = Atomic<Bool>(false)

    init(id: String, url: WorkerURL, modelID: String?, role: WorkerRole = .regular, bootstrapPort: Int? = nil, labels: [String: String] = [:],
         apiKey: String? = nil, breaker: CircuitBreakerConfig = CircuitBreakerConfig(), health: HealthCheckConfig = HealthCheckConfig()) {
        self.id = id
        self.url = url
        self._modelID = Mutex(modelID)
        self.role = role
        self.bootstrapPort = bootstrapPort
        self.settings = Mutex((labels, apiKey))
        self.breaker = Mutex(CircuitBreaker(breaker))
        // Without health checks a worker is taken as healthy; with them it must answer first.
        self.health = Mutex(HealthState(health, startHealthy: !health.enabled))
        self._healthy.store(!health.enabled, ordering: .relaxed)
    }

    public var speaksHTTP2: Bool { _speaksHTTP2.load(ordering: .relaxed) }
    func setSpeaksHTTP2(_ on: Bool) { _speaksHTTP2.store(on, ordering: .relaxed) }

    public var labels: [String: String] { settings.withLock { $0.labels } }
    /// The bearer token sent to this worker (per-worker `api_key`, else `--api-key`).
    public var apiKey: String? { settings.withLock { $0.apiKey } }
    func update(labels: [String: String]?, apiKey: String??) {
        settings.withLock { s in
            if let labels { s.labels = labels }
            if let apiKey { s.apiKey = apiKey }
        }
    }

    // MARK: circuit breaker

    public var breakerState: CircuitBreaker.State { breaker.withLock { $0.state } }
    /// Whether a request could be sent now (no state change): for building candidates.
    func breakerAllows(now: UInt64) -> Bool { breaker.withLock { $0.canPass(now: now) } }
    /// Takes a slot for an attempt about to start (half-open probes are counted); returns the
    /// open-to-half-open transition when this attempt is the first probe.
    func breakerAcquire(now: UInt64) -> CircuitBreaker.Transition? {
        breaker.withLock { b in
            let from = b.state
            _ = b.acquire(now: now)
            return b.state == from ? nil : CircuitBreaker.Transition(from: from, to: b.state)
        }
    }
    /// Records an attempt's end; returns the transition if it caused one.
    func breakerRecord(success: Bool, now: UInt64) -> CircuitBreaker.Transition? {
        breaker.withLock { b in
            let from = b.state
            return b.record(success: success, now: now).map { CircuitBreaker.Transition(from: from, to: $0) }
        }
    }
    /// Failures and successes in a row (metrics).
    public var breakerStreaks: (failures: Int, successes: Int) { breaker.withLock { ($0.consecutiveFailures, $0.consecutiveSuccesses) } }
    /// Another router's breaker transition, adopted (`CircuitBreaker.adoptOpen`/`adoptClosed`).
    func breakerAdopt(open: Bool, now: UInt64) -> CircuitBreaker.Transition? {
        breaker.withLock { b in
            let from = b.state
            guard open ? b.adoptOpen(now: now) : b.adoptClosed() else { return nil }
            return CircuitBreaker.Transition(from: from, to: b.state)
        }
    }

    // MARK: health

    public var healthStatus: HealthState.Status { health.withLock { $0.status } }
    /// Records a health check; returns the new status if it changed.
    func recordHealthCheck(success: Bool) -> HealthState.Status? {
        let change = health.withLock { $0.record(success: success) }
        if change != nil { syncHealthy() }
        return change
    }

    /// Why the router will not route to this worker whatever its health checks say: what it
    /// described about itself is out of bounds (a `dp_size` no router could hold ranks for).
    /// nil once it describes itself within bounds again.
    private let _refusal = Mutex<String?>(nil)
    public var refusal: String? { _refusal.withLock { $0 } }
    func refuse(because reason: String?) {
        _refusal.withLock { $0 = reason }
        syncHealthy()
    }

    /// The hot path's flag, derived in one place: healthy by the checks (or a peer's verdict)
    /// and not refused.
    private func syncHealthy() {
        _healthy.store(refusal == nil && healthStatus == .healthy, ordering: .relaxed)
    }

    public var modelID: String? { _modelID.withLock { $0 } }
    /// Another router saw this worker fail its health checks: stop routing to it until this
    /// router's own checks see it recover. Returns whether anything changed.
    func adoptUnhealthy() -> Bool {
        let changed = health.withLock { $0.adoptUnhealthy() }
        if changed {
            syncHealthy()
            adoptions.add(1, ordering: .relaxed)
        }
        return changed
    }

    /// Counts adopted verdicts, so an expiry scheduled for one does not end a later one early.
    private let adoptions = Atomic<Int>(0)
    var adoptionCount: Int { adoptions.load(ordering: .relaxed) }

    /// Another router says the worker is back, or the verdict adopted as `adoption` expired:
    /// only for a router without health checks of its own (`HealthState.adoptHealthy`).
    func adoptHealthy(ifStill adoption: Int? = nil) -> Bool {
        if let adoption, adoption != adoptionCount { return false }
        let changed = health.withLock { $0.adoptHealthy() }
        if changed { syncHealthy() }
        return changed
    }

    /// The predecessor's verdict on this worker, taken while this router has none of its own
    /// (`HealthState.inherit`).
    func inheritHealth(_ verdict: HealthState.Status) {
        if health.withLock({ $0.inherit(verdict) }) { syncHealthy() }
    }

    func setModelID(_ m: String) { _modelID.withLock { $0 = m } }
    public var isDraining: Bool { _draining.load(ordering: .relaxed) }
    func markDraining() { _draining.store(true, ordering: .relaxed) }
    public var isHealthy: Bool { _healthy.load(ordering: .relaxed) }
    public var inFlight: Int { _inFlight.load(ordering: .relaxed) }
    public var served: Int { _served.load(ordering: .relaxed) }
    public var reportedLoad: Int? {
        let v = _reportedLoad.load(ordering: .relaxed)
        return v < 0 ? nil : v
    }
    func setReportedLoad(_ load: Int?) { _reportedLoad.store(load ?? -1, ordering: .relaxed) }

    // MARK: the engine's own load (`GET /v1/loads`)

    /// The last load the worker's engine reported, with when it arrived (monotonic ms).
    private let _engineLoad = Mutex<(load: EngineLoad, atMs: UInt64)?>(nil)
    /// Until when (monotonic ms) the last report keeps this worker overloaded; 0: it is not.
    /// Derived once per report, so a routing decision reads one atomic per worker.
    private let _overloadedUntilMs = Atomic<UInt64>(0)

    /// The report's mean KV usage (a `Double`'s bits; NaN: none) and until when it counts, for
    /// cache_aware's token-usage guards.
    private let _tokenUsageBits = Atomic<UInt64>(Double.nan.bitPattern)
    private let _reportFreshUntilMs = Atomic<UInt64>(0)
    /// The report's waiting requests and throughput (a `Double`'s bits), and the requests served
    /// when it came, for the expected wait (`LeastLoadPolicy`).
    private let _reportWaiting = Atomic<Int>(0)
    private let _reportThroughputBits = Atomic<UInt64>(0)
    private let _servedAtReport = Atomic<Int>(0)

    public var engineLoad: (load: EngineLoad, atMs: UInt64)? { _engineLoad.withLock { $0 } }
    /// Keeps a report that counts until `freshUntilMs`, and whether it makes the worker overloaded.
    func recordEngineLoad(_ load: EngineLoad, atMs: UInt64, freshUntilMs: UInt64, overloaded: Bool) {
        _engineLoad.withLock { $0 = (load, atMs) }
        _overloadedUntilMs.store(overloaded ? freshUntilMs : 0, ordering: .relaxed)
        _tokenUsageBits.store((load.tokenUsage ?? .nan).bitPattern, ordering: .relaxed)
        _reportWaiting.store(load.waiting, ordering: .relaxed)
        _reportThroughputBits.store(load.ranks.reduce(0.0) { $0 + ($1.throughput ?? 0) }.bitPattern, ordering: .relaxed)
        _servedAtReport.store(served, ordering: .relaxed)
        _reportFreshUntilMs.store(freshUntilMs, ordering: .relaxed)
        setReportedLoad(load.running + load.waiting)
    }
    /// A candidate given what the fresh report at `now` says beyond the load (waiting,
    /// throughput, KV usage, requests sent since): for the policies that read it.
    func withEngineSignals(_ c: WorkerCandidate, now: UInt64) -> WorkerCandidate {
        guard now < _reportFreshUntilMs.load(ordering: .relaxed) else { return c }
        var c = c
        c.reportedWaiting = _reportWaiting.load(ordering: .relaxed)
        c.throughput = Double(bitPattern: _reportThroughputBits.load(ordering: .relaxed))
        c.sentSinceReport = max(0, served - _servedAtReport.load(ordering: .relaxed))
        c.tokenUsage = tokenUsage(now: now)
        return c
    }

    /// The KV usage of a report that still counts at `now`, nil when there is none.
    func tokenUsage(now: UInt64) -> Double? {
        guard now < _reportFreshUntilMs.load(ordering: .relaxed) else { return nil }
        let usage = Double(bitPattern: _tokenUsageBits.load(ordering: .relaxed))
        return usage.isNaN ? nil : usage
    }
    /// Whether a report keeps this worker overloaded at `now` (one atomic read: the hot path's check).
    func isOverloaded(now: UInt64) -> Bool { now < _overloadedUntilMs.load(ordering: .relaxed) }
    /// The report that makes this worker overloaded at `now`, nil when there is none.
    func overload(now: UInt64) -> EngineLoad? {
        isOverloaded(now: now) ? engineLoad?.load : nil
    }

    // MARK: liveness (`Liveness`: wedged, stalled)

    private let liveness = Mutex(Liveness())
    /// Mirrors `liveness` for the hot path: 0 admits, 1 does not, 2 admits only when idle (probing).
    private let _livenessCode = Atomic<Int>(0)
    /// When the worker last produced a head, a token or an answer (monotonic ms).
    private let _lastProgressMs = Atomic<UInt64>(0)
    /// The router's requests in flight to it then (or 1 when it became busy after that).
    private let _inFlightAtProgress = Atomic<Int>(0)
    /// When its first request in flight (after idle) was sent.
    private let _busySinceMs = Atomic<UInt64>(0)
    /// When the worker last answered anything: a response, a probe, a load poll; at first,
    /// when it was added (a worker added a moment ago has not been silent).
    private let _lastContactMs = Atomic<UInt64>(MonotonicClock.nowMs())

    public var livenessVerdict: Liveness { liveness.withLock { $0 } }
    /// Whether liveness lets a new request go to it now (one or two atomic reads).
    public var isAlive: Bool {
        switch _livenessCode.load(ordering: .relaxed) {
        case 0: true
        case 2: inFlight == 0
        default: false
        }
    }

    private func changeLiveness(_ change: (inout Liveness) -> Bool) -> Liveness? {
        liveness.withLock { l in
            guard change(&l) else { return nil }
            _livenessCode.store(l.admits(inFlight: 1) ? 0 : (l.admits(inFlight: 0) ? 2 : 1), ordering: .relaxed)
            return l
        }
    }

    /// A head, a read of its body, or its end came from the worker: progress and contact. The
    /// returned verdict is the one it ended (nil: nothing changed, the usual case: no lock taken).
    func progressed(now: UInt64) -> Liveness? {
        _lastProgressMs.store(now, ordering: .relaxed)
        _lastContactMs.store(now, ordering: .relaxed)
        _inFlightAtProgress.store(inFlight, ordering: .relaxed)
        guard _livenessCode.load(ordering: .relaxed) != 0 else { return nil }
        let before = livenessVerdict
        return changeLiveness { $0.progressed() } != nil ? before : nil
    }

    /// A probe or a load poll answered. Returns the verdict it ended, if it ended one.
    func contacted(now: UInt64) -> Liveness? {
        _lastContactMs.store(now, ordering: .relaxed)
        guard _livenessCode.load(ordering: .relaxed) != 0 else { return nil }
        let before = livenessVerdict
        return changeLiveness { $0.contacted() } != nil ? before : nil
    }

    /// A call got no answer at all. Returns the new verdict when the worker is stalled by it.
    func transportFailed(now: UInt64, rule: Liveness.Rule) -> Liveness? {
        let last = _lastContactMs.load(ordering: .relaxed)
        return changeLiveness { $0.transportFailed(silentMs: now > last ? now - last : 0, rule: rule) }
    }

    /// The periodic look (`LivenessWatch`). Returns the new verdict when it changed.
    func reviewLiveness(now: UInt64, rule: Liveness.Rule) -> Liveness? {
        let silentSince = max(_lastProgressMs.load(ordering: .relaxed), _busySinceMs.load(ordering: .relaxed))
        let n = inFlight, before = _inFlightAtProgress.load(ordering: .relaxed)
        return changeLiveness { $0.review(inFlight: n, silentMs: now > silentSince ? now - silentSince : 0, inFlightWhenSilenceBegan: before, rule: rule) }
    }

    /// Another router's verdict (`Liveness.adoptWedged`, `adoptAlive`). Returns the new verdict when it changed.
    func adoptLiveness(wedged: Bool) -> Liveness? {
        changeLiveness { wedged ? $0.adoptWedged() : $0.adoptAlive() }
    }

    /// The first request after idle: the silence that may make a wedge starts now.
    func becameBusy(now: UInt64) {
        _busySinceMs.store(now, ordering: .relaxed)
        _inFlightAtProgress.store(1, ordering: .relaxed)
    }

    // MARK: data-parallel ranks (`--dp-aware`)

    /// The most data-parallel ranks a worker may report: more is a broken or hostile worker
    /// (the router keeps a load count and a cache-aware tree per rank).
    static let maxDPSize = 1024

    /// Ranks behind this worker: its `/get_server_info` `dp_size`, 1 until known.
    private let _dpSize = Atomic<Int>(1)
    /// Requests in flight per rank (the worker's own count covers all of them).
    private let rankLoads = Mutex<[Int]>([])
    public var dpSize: Int { _dpSize.load(ordering: .relaxed) }
    func setDPSize(_ n: Int) {
        let ranks = min(max(1, n), Self.maxDPSize)
        rankLoads.withLock { $0 = Array(repeating: 0, count: ranks) }
        _dpSize.store(ranks, ordering: .relaxed)
    }
    func rankLoad(_ rank: Int) -> Int { rankLoads.withLock { rank < $0.count ? $0[rank] : 0 } }
    func rankStarted(_ rank: Int) { rankLoads.withLock { if rank < $0.count { $0[rank] += 1 } } }
    func rankFinished(_ rank: Int) { rankLoads.withLock { if rank < $0.count, $0[rank] > 0 { $0[rank] -= 1 } } }

    /// Requests in flight per rank, for the other routers (`MeshBridge.startFleetLoad`).
    var rankLoadsSnapshot: [Int] { rankLoads.withLock { $0 } }

    // MARK: the other routers' load (`FleetLoad`)

    /// What the other routers of the mesh have in flight to this worker, as they said last.
    private let _peerInFlight = Atomic<Int>(0)
    private let peerRankLoads = Mutex<[Int]>([])
    public var peerInFlight: Int { _peerInFlight.load(ordering: .relaxed) }
    /// This router's count and the others': the load that load-aware decisions compare, so a
    /// worker one of N routers sends little to is not taken for idle.
    public var fleetInFlight: Int { inFlight + peerInFlight }
    func fleetRankLoad(_ rank: Int) -> Int { rankLoad(rank) + peerRankLoads.withLock { rank < $0.count ? $0[rank] : 0 } }
    func setPeerLoad(inFlight: Int, ranks: [Int]) {
        _peerInFlight.store(inFlight, ordering: .relaxed)
        peerRankLoads.withLock { $0 = ranks }
    }

    /// Counts a request in; true when it is the only one in flight (the worker was idle here).
    @discardableResult
    func requestStarted() -> Bool {
        _served.add(1, ordering: .relaxed)
        return _inFlight.add(1, ordering: .relaxed).newValue == 1
    }
    func requestFinished() { _inFlight.subtract(1, ordering: .relaxed) }

    /// True when the worker is healthy and not draining (the breaker is checked separately,
    /// with the time of the decision).
    public var isAvailable: Bool { isHealthy && !isDraining }
}
