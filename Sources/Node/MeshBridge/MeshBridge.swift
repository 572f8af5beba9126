import Foundation
import Mesh
import NIOConcurrencyHelpers
import NIOCore
import Reliability

/// The one place where mesh state and router state meet (policies never import the mesh).
///
/// - The worker registry: a worker added or removed on any router, through `--worker-urls` or
///   the worker APIs, is added or removed on every router. Store "workers", key: the worker's
///   canonical URL, value: its settings as JSON (nil: removed).
/// - Sticky sessions of `manual` (`SessionReplication`): a session keeps its worker through any
///   router, also after the router that placed it died; the store is bounded and expires.
/// - Health verdicts: store "health", key: the worker's canonical URL, value: "unhealthy" or
///   "healthy", written when this router's own checks change their verdict. A router told
///   "unhealthy" stops routing to the worker at once (one router seeing a dead worker spares the
///   others the failed requests and the wait for their own checks); "healthy" is only
///   information: each router brings a worker back on its own checks' successes.
/// - Circuit breakers: store "breakers", key: the worker's canonical URL, value: "open@<ms>"
///   (wall clock) or "closed", written when this router's breaker opens or closes on its own
///   requests. A router told "open" opens its closed breaker for the worker (unless the news is
///   older than the open duration: a router that joins later is not fooled by an old opening);
///   told "closed" (another router's probes got through) it closes its own. So the router that
///   takes the VIP routes as the one that held it: it neither sends a dead worker requests the
///   others already route around, nor keeps a worker the others know is back out for a minute.
/// - Cache-aware decisions travel separately, as they happen (`TreeSync`).
/// Stores are last-writer-wins by hybrid logical clock.
enum MeshBridge {
    static let workersStore = "workers"
    static let sessionsStore = SessionReplication.store
    static let healthStore = "health"
    static let breakersStore = "breakers"
    static let livenessStore = "liveness"

    /// Starts applying other routers' changes to this router.
    static func start(state: RouterState) {
        guard let mesh = state.mesh?.service else { return }
        mesh.onChange { store, key, value, from in
            switch store {
            case workersStore: apply(key: key, value: value, from: from, state: state)
            case healthStore:
                guard let w = state.registry.worker(url: key) else { return }
                switch value.map({ String(decoding: $0, as: UTF8.self) }) {
                case "unhealthy":
                    guard w.adoptUnhealthy() else { return }
                    state.log(.mesh).warning("worker unhealthy (seen by another router)", metadata: ["worker": "\(key)"])
                    expireVerdict(on: w, state: state)
                case "healthy":
                    guard w.adoptHealthy() else { return }
                    state.log(.mesh).info("worker healthy again (seen by another router)", metadata: ["worker": "\(key)"])
                default: return
                }
            case sessionsStore: SessionReplication.applied(key: key, value: value, state: state)
            case breakersStore: breakerHeard(key: key, value: value, from: from, state: state)
            case livenessStore: livenessHeard(key: key, value: value, from: from, state: state)
            default: return
            }
        }
    }

    /// This router's breaker for `w` opened or closed on its own requests: tell the others
    /// (half-open is this router's own probing, not news).
    static func breakerChanged(_ w: Worker, to change: CircuitBreaker.State, state: RouterState) {
        guard let mesh = state.mesh?.service else { return }
        let value: String
        switch change {
        case .open: value = "open@\(Int64(Date().timeIntervalSince1970 * 1000))"
        case .closed: value = "closed"
        case .halfOpen: return
        }
        mesh.publish(store: breakersStore, key: w.url.canonical, value: Array(value.utf8))
    }

    /// Another router's breaker transition for a worker this router knows: adopted.
    static func breakerHeard(key: String, value: [UInt8]?, from: String, state: RouterState) {
        guard let value, let w = state.registry.worker(url: key) else { return }
        let text = String(decoding: value.prefix(64), as: UTF8.self)
        let open: Bool
        if text == "closed" {
            open = false
        } else if text.hasPrefix("open@"), let at = Int64(text.dropFirst(5)) {
            // News older than the open duration is over: that breaker has half-opened since.
            let age = Int64(Date().timeIntervalSince1970 * 1000) - at
            guard age < Int64(state.config.breaker.openDurationMs) else { return }
            open = true
        } else {
            return
        }
        guard let change = w.breakerAdopt(open: open, now: state.nowMs()) else { return }
        state.metrics.breakerTransition(worker: w.url.canonical, change)
        state.log(.mesh).warning("circuit breaker \(change.to.rawValue) (seen by another router)", metadata: ["worker": "\(key)", "peer": "\(from)", "from": "\(change.from.rawValue)"])
    }

    /// This router took a worker for wedged, or saw it produce again: tell the others, so a
    /// wedged worker costs each of them at most one request at a time instead of a pile. A stall
    /// is about this router's own path to the worker, and probing is its own business: not news.
    static func livenessChanged(_ w: Worker, to verdict: Liveness, state: RouterState) {
        guard let mesh = state.mesh?.service else { return }
        let value: String
        switch (verdict.wedge, verdict.stalled) {
        case (.wedged, _): value = "wedged@\(Int64(Date().timeIntervalSince1970 * 1000))"
        case (.none, false): value = "alive"
        default: return
        }
        mesh.publish(store: livenessStore, key: w.url.canonical, value: Array(value.utf8))
    }

    /// Another router's liveness verdict on a worker this router knows: adopted. A "wedged"
    /// older than a minute is over (that router has probed the worker since, or is gone).
    static func livenessHeard(key: String, value: [UInt8]?, from: String, state: RouterState) {
        guard let value, state.config.workerLoad.liveness.wedgeMs > 0, let w = state.registry.worker(url: key) else { return }
        let text = String(decoding: value.prefix(64), as: UTF8.self)
        let wedged: Bool
        if text == "alive" {
            wedged = false
        } else if text.hasPrefix("wedged@"), let at = Int64(text.dropFirst(7)) {
            guard Int64(Date().timeIntervalSince1970 * 1000) - at < 60_000 else { return }
            wedged = true
        } else {
            return
        }
        guard let verdict = w.adoptLiveness(wedged: wedged) else { return }
        LivenessWatch.report(w, to: verdict, metrics: state.metrics, log: state.log(.mesh), peer: from)
    }

    /// Without health checks of its own, a router would keep another router's "unhealthy"
    /// for good if that router died before it saw the worker recover: the verdict expires after
    /// `--cb-timeout-duration-secs`, as an open circuit breaker would let a request try again.
    private static func expireVerdict(on w: Worker, state: RouterState) {
        guard !state.config.health.enabled, let loop = state.pools.loops.first else { return }
        let adoption = w.adoptionCount
        loop.scheduleTask(in: .milliseconds(Int64(state.config.breaker.openDurationMs))) {
            if w.adoptHealthy(ifStill: adoption) {
                state.log(.mesh).info("worker routed to again: another router's unhealthy verdict expired", metadata: ["worker": "\(w.url.canonical)"])
            }
        }
    }

    /// A cluster-wide rate limit: `--rate-limit-tokens-per-second` is the budget of the whole
    /// mesh, shared by demand (`DemandShares`): every 100 ms this router tells the others how
    /// many requests per second it is asked for, and sets its rate to its share of the budget.
    /// All traffic on one router (an active/backup VIP) gets about the whole budget; traffic on
    /// every router splits it. Crashed and partitioned routers keep a reserve of budget/N until
    /// they leave gracefully, which is also what a router cut off from the others falls back to:
    /// the sides of a partition never add up to more than the budget.
    static func budgetSharing(state: RouterState) -> PeriodicTask? {
        guard let mesh = state.mesh?.service, state.config.admission.tokensPerSecond != nil, let loop = state.pools.loops.first else { return nil }
        // Until the mesh has had time to form, the routers it was told of count: a router that
        // has not met its peers yet must not take the whole budget (three routers started
        // together would each admit R for a moment).
        let configured = (state.config.mesh?.peers.count ?? 0) + 1
        let forming = MonotonicClock.nowMs() + 2000
        state.admission.shareClusterBudget(expectedMembers: configured)
        let me = mesh.config.name
        mesh.onCustom { topic, payload, sender in
            // Keyed by the authenticated sender, not the name the payload carries (kept on the
            // wire for older routers): one member cannot pose as many and shrink every share.
            guard topic == demandTopic, let demand = demand(from: payload), mesh.isMember(sender) else { return }
            state.admission.heard(from: sender, demand: demand)
        }
        let last = NIOLockedValueBox(0)
        return PeriodicTask("rate-limit share", on: loop, every: .milliseconds(100)) {
            // The share from what everyone told last (this router's value included), then this
            // router's new value, which the others have before the next share is computed.
            let n = MonotonicClock.nowMs() < forming ? max(mesh.budgetShareCount, configured) : mesh.budgetShareCount
            state.admission.applyShare(members: n)
            if let demand = state.admission.tellDemand(), mesh.hasPeers {
                let bits = demand.bitPattern
                mesh.broadcast(topic: demandTopic, payload: (0..<8).map { UInt8(truncatingIfNeeded: bits >> (56 - 8 * $0)) } + Array(me.utf8))
            }
            guard last.withLockedValue({ old in defer { old = n }; return old != n }) else { return }
            state.log(.mesh).info("rate limit shared by demand", metadata: ["routers": "\(n)", "cluster_budget": "\(state.config.admission.tokensPerSecond ?? 0)"])
        }
    }

    static let demandTopic = "demand"
    static let loadTopic = "load"

    /// Fleet-wide load (`FleetLoad`): every mesh tick (50 ms) this router tells the others what it has in
    /// flight to each worker (and rank) when that changed, and again each second while it is
    /// not zero; what the others said last is added to each worker's own count
    /// (`Worker.fleetInFlight`), which cache-aware's balance check, `power_of_two` and
    /// `GET /workers` use. With N routers taking requests in turn, a hot prefix then spills at
    /// the load one router would spill it at, not N times later. A peer's report counts while
    /// it is a member and for 3 s after it was last renewed. The work rides on the mesh's own
    /// timer: a timer of its own cost an idle router a quarter more CPU (20 more wake-ups a second).
    static func startFleetLoad(state: RouterState) {
        guard let mesh = state.mesh?.service else { return }
        let book = NIOLockedValueBox(FleetLoadBook())
        let schedule = NIOLockedValueBox(LoadReportSchedule())
        let dpAware = state.config.dpAware
        mesh.onCustom { topic, payload, sender in
            guard topic == loadTopic, mesh.isMember(sender) else { return }
            guard let report = LoadReport.decode(payload) else { return mesh.countDrop("malformed_load_report") }
            let now = MonotonicClock.nowMs()
            let totals = book.withLockedValue { b in
                b.heard(from: sender, report, nowMs: now)
                return b.totals(nowMs: now)
            }
            applyPeerLoads(totals, to: state.registry)
        }
        let anyApplied = NIOLockedValueBox(false)
        mesh.onTick { _ in
            let now = MonotonicClock.nowMs()
            let report = LoadReport(entries: state.registry.all.compactMap { w in
                let ranks = dpAware && w.dpSize > 1 ? w.rankLoadsSnapshot : []
                guard w.inFlight > 0 || ranks.contains(where: { $0 > 0 }) else { return nil }
                return LoadReport.Entry(worker: w.url.canonical, inFlight: w.inFlight, ranks: ranks)
            })
            let (send, reporting) = schedule.withLockedValue { s in (s.shouldSend(report, nowMs: now), s.isReporting(nowMs: now)) }
            if send, mesh.hasPeers {
                mesh.broadcast(topic: loadTopic, payload: report.encoded())
            }
            // What peers that died, left or went quiet said stops counting.
            let totals = book.withLockedValue { b in
                b.expire(nowMs: now)
                b.retain { mesh.isMember($0) }
                return b.totals(nowMs: now)
            }
            // Idle: nothing to clear once every peer load is zero, and no tick wanted until a
            // request begins (`RouterState.requestBegan` wakes the mesh) or a report arrives.
            guard !totals.isEmpty || anyApplied.withLockedValue({ $0 }) else { return reporting }
            anyApplied.withLockedValue { $0 = !totals.isEmpty }
            applyPeerLoads(totals, to: state.registry)
            return true
        }
    }

    private static func applyPeerLoads(_ totals: [String: FleetLoadBook.Load], to registry: WorkerRegistry) {
        for w in registry.all {
            let load = totals[w.url.canonical]
            w.setPeerLoad(inFlight: load?.inFlight ?? 0, ranks: load?.ranks ?? [])
        }
    }

    /// A demand message's rate: 8 bytes of a big-endian Double, then the sender's name; nil for
    /// anything else, or a rate that is not a finite number of at least 0.
    static func demand(from payload: [UInt8]) -> Double? {
        guard payload.count > 8, payload.count < 1100 else { return nil }
        var bits: UInt64 = 0
        for b in payload.prefix(8) { bits = bits << 8 | UInt64(b) }
        let demand = Double(bitPattern: bits)
        return demand.isFinite && demand >= 0 ? demand : nil
    }

    /// A routing key was (re)assigned here by `manual` (the policy kept under `policyKey`) to
    /// `candidate`: tell the others.
    static func assigned(routingKey: String, policyKey: String, candidate: String, state: RouterState) {
        SessionReplication.assigned(routingKey: routingKey, policyKey: policyKey, candidate: candidate, state: state)
    }

    /// A worker was added or changed here: tell the others.
    static func published(_ w: Worker, state: RouterState) {
        guard let mesh = state.mesh?.service else { return }
        mesh.publish(store: workersStore, key: w.url.canonical, value: Array(WorkerFields.settings(of: w).render().utf8))
    }

    /// This router's health checks changed their verdict on a worker: tell the others.
    static func healthObserved(_ w: Worker, status: HealthState.Status, state: RouterState) {
        guard status != .unknown else { return }
        state.mesh?.service.publish(store: healthStore, key: w.url.canonical, value: Array(status.rawValue.utf8))
    }

    /// A worker was removed here: tell the others.
    static func removed(_ url: WorkerURL, state: RouterState) {
        state.mesh?.service.publish(store: workersStore, key: url.canonical, value: nil)
    }

    static func apply(key: String, value: [UInt8]?, from peer: String, state: RouterState) {
        guard let url = try? WorkerURL(parsing: key) else { return }
        let existing = state.registry.worker(url: url.canonical)
        guard let value else {
            if let w = existing, let removed = state.registry.remove(id: w.id) {
                state.audit.fleetChangeFromMesh("worker removed", worker: removed.url.canonical, peer: peer)
                state.pools.closeIdle(to: removed.url)
            }
            return
        }
        // Peers are authenticated, but a value that could split a header line is never applied.
        let received: WorkerFields.Received
        switch WorkerFields.Received.from(JSONValue.parse(value) ?? [:]) {
        case .success(let r): received = r
        case .failure(let refusal):
            state.log(.mesh).warning("worker update from another router refused", metadata: ["worker": "\(url.canonical)", "reason": "\(refusal.reason)", "peer": "\(peer)"])
            return
        }
        if let w = existing {
            if let model = received.model { w.setModelID(model) }
            w.update(labels: received.labels, apiKey: .some(received.apiKey))
            state.audit.fleetChangeFromMesh("worker updated", worker: url.canonical, peer: peer)
            return
        }
        guard let w = try? state.registry.add(url: url, modelID: received.model, role: received.role, bootstrapPort: received.bootstrapPort,
                                              labels: received.labels, apiKey: received.apiKey) else { return }
        state.audit.fleetChangeFromMesh("worker added", worker: w.url.canonical, peer: peer)
        state.discovery.discover(w)
    }
}
