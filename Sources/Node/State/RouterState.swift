import Logging
import Tracing
import Policies
import NIOCore
import Synchronization

/// Everything the request handlers of one router node share. Immutable configuration plus
/// atomics and lock-protected registries: safe to read from any event loop.
public final class RouterState: Sendable {
    public let config: RouterConfig
    public let registry: WorkerRegistry
    public let metrics: RouterMetrics
    /// The `server` module's logger; `log(_:)` gives the others'.
    let logger: Logger
    private let moduleLoggers: [LogLevels.Module: Logger]
    /// A module's logger, at its `--log-level` (`LogLevels`).
    func log(_ module: LogLevels.Module) -> Logger { moduleLoggers[module] ?? logger }
    let pools: UpstreamPools
    let requestIDs: RequestIDSource
    let cors: CORSPolicy
    /// Whether the policy reads the prompt (cache_aware, prefix_hash): others skip extracting it.
    let policyUsesText: Bool
    let admission: AdmissionController
    /// Who may call which route (`--api-key`, control-plane keys, JWTs).
    let access: AccessPolicy
    /// Verifies control-plane JWTs, when `--jwt-issuer` is set.
    let jwt: JWTAuthority?
    let audit: AuditLog
    /// Conversations (`--history-backend`).
    let history: any HistoryStore
    /// `manual` assignments in Redis (`--session-store redis`).
    let sessions: RedisSessions?
    /// Writes owed to a store without a client waiting: deferred history, Redis sessions.
    let backgroundWrites: BackgroundWrites
    /// Responses answered `deferred` and not stored yet, read before the store meanwhile.
    let heldTurns = HeldTurns()
    /// The TLS contexts (API port, workers), reloaded on SIGHUP.
    public let tls: TLSContexts
    /// Learns the model of workers added without one.
    let discovery = ModelDiscovery(clock: MonotonicClock.nowMs)
    /// The mesh, when --enable-mesh is on.
    let mesh: MeshLink?
    /// Ships cache-aware decisions to the other routers (mesh on, cache_aware).
    var treeSync: TreeSync? { mesh?.treeSync }
    private let _draining = Atomic<Bool>(false)
    private let _handedOver = Atomic<Bool>(false)
    /// Requests received and not yet answered in full, on every route.
    private let _inFlight = Atomic<Int>(0)
    /// With `--enable-trace`: where requests' spans go (`RequestTrace`); nil costs nothing.
    let tracer: (any Tracer)?
    /// Answers, server errors and cache hits as rates for `/dashboard`.
    let rates = RecentRates()
    /// When this router started (monotonic ms), for the dashboard's uptime.
    let startedAtMs = MonotonicClock.nowMs()

    init(config: RouterConfig, registry: WorkerRegistry, metrics: RouterMetrics, logger: Logger, pools: UpstreamPools,
         mesh: MeshLink? = nil, jwt: JWTAuthority? = nil, tls: TLSContexts, history: any HistoryStore = MemoryHistoryStore(),
         sessions: RedisSessions? = nil, backgroundWrites: BackgroundWrites = BackgroundWrites(), tracer: (any Tracer)? = nil) {
        self.mesh = mesh
        self.tracer = tracer
        self.backgroundWrites = backgroundWrites
        self.history = history
        self.sessions = sessions
        self.tls = tls
        self.access = AccessPolicy(config.security)
        self.jwt = jwt
        self.audit = AuditLog(enabled: config.security.auditLogging, logger: logger, level: config.security.auditLevel)
        self.config = config
        self.registry = registry
        self.metrics = metrics
        self.logger = logger
        self.moduleLoggers = Dictionary(uniqueKeysWithValues: LogLevels.Module.allCases.map { ($0, logger.module($0, config.logLevels)) })
        self.pools = pools
        self.requestIDs = RequestIDSource(headers: config.requestIDHeaders)
        self.cors = CORSPolicy(origins: config.corsAllowedOrigins)
        let policies = config.pd.map { [$0.prefillPolicy, $0.decodePolicy] } ?? [config.policy]
        self.policyUsesText = policies.contains { $0 == .cache_aware || $0 == .prefix_hash }
        self.admission = AdmissionController(config: config.admission, metrics: metrics, clock: MonotonicClock.nowMs)
    }

    /// Monotonic milliseconds: the time every policy, breaker and bucket decision uses.
    func nowMs() -> UInt64 { MonotonicClock.nowMs() }

    public var isDraining: Bool { _draining.load(ordering: .relaxed) }
    func startDraining() { _draining.store(true, ordering: .relaxed) }
    /// An in-place upgrade's successor serves now; this router only drains (`RouterHandover`).
    var handedOver: Bool { _handedOver.load(ordering: .relaxed) }
    func markHandedOver() { _handedOver.store(true, ordering: .relaxed) }
    public var inFlight: Int { _inFlight.load(ordering: .relaxed) }
    func requestBegan() { _inFlight.add(1, ordering: .relaxed); metrics.requestStarted() }
    /// A worker that had nothing in flight from this router has a request now: the mesh's timer,
    /// which sleeps until its protocol has something due, wakes so that the fleet-load report
    /// goes out at once.
    func workerBecameBusy() { mesh?.service.wake() }
    func requestEnded() { _inFlight.subtract(1, ordering: .relaxed); metrics.requestEnded() }
}
