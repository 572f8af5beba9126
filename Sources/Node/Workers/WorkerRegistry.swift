import Policies
import Reliability
import Synchronization
import Primitives

/// The router's one list of workers, shared by `--worker-urls`, the worker APIs and (later)
/// the mesh bridge, together with one routing-policy value per model.
///
/// Reads on the hot path take a short lock to copy an immutable array of references; every
/// change replaces the array, so a request routes on a consistent snapshot.
public final class WorkerRegistry: Sendable {
    /// A routing decision: the worker, why and by which policy, and with `--dp-aware` its rank.
    public struct Choice {
        public let worker: Worker
        public let reason: SelectionReason
        public let policy: PolicyName
        /// The data-parallel rank chosen (nil: the worker has one rank, or the router is not
        /// DP-aware); the exchange sends it to the worker.
        public let rank: Int?
        /// The key the deciding policy is kept under ("model", "prefill:model", ...): where
        /// another router applies this decision (a replicated sticky assignment).
        public let policyKey: String
        /// The candidate the policy chose: the worker's id, with `--dp-aware` "id@rank".
        public let candidate: String
        /// cache_aware's match ratio, when it consulted its tree (`Selection.matchRatio`).
        public var matchRatio: Double? = nil
        /// Every usable worker was left out (`RoutingScreen`) and this is the least loaded of them.
        public enum Fallback: String { case liveness, overload }
        public var fallback: Fallback? = nil
    }

    public enum Outcome {
        case worker(Choice)
        case unknownModel
        case noneAvailable
        /// Every usable worker is overloaded and `--worker-overload-shed` is on.
        case overloaded
    }

    public enum AddError: Error, Equatable {
        case duplicate(existingID: String)
    }

    private let workers = Mutex<[Worker]>([])
    /// Told of every worker added, after it is in the list: background work that watches the
    /// fleet (health checks) starts on a new worker at once instead of polling for one.
    private let addedHandlers = Mutex<[@Sendable (Worker) -> Void]>([])
    public func onAdded(_ handler: @escaping @Sendable (Worker) -> Void) { addedHandlers.withLock { $0.append(handler) } }
    /// One policy value per model, each behind its own lock so models do not contend.
    private let policies = Mutex<[String: PolicyBox]>([:])
    public let policyName: PolicyName
    public let policyConfig: PolicyConfig
    /// The policies of prefill and decode workers (`--prefill-policy`, `--decode-policy`).
    public let rolePolicies: [WorkerRole: PolicyName]

    /// A policy value mutated in place under its lock (a radix tree must never be copied per request).
    final class PolicyBox: Sendable {
        let name: PolicyName
        let policy: Mutex<any LoadBalancingPolicy>
        init(_ name: PolicyName, config: PolicyConfig) {
            self.name = name
            policy = Mutex(name.make(config))
        }
    }

    /// `--enable-igw`: a model's policy is the `policy` label of its workers (the first that has
    /// one), else `--policy`; a label changed or learned later replaces the model's policy.
    public let policiesFromLabels: Bool
    /// `--dp-aware`: each data-parallel rank of a worker is a candidate of its own.
    public let dpAware: Bool

    public let breakerConfig: CircuitBreakerConfig
    public let healthConfig: HealthCheckConfig
    /// `--worker-overload-shed`: refuse a request whose usable workers are all overloaded,
    /// instead of sending it to the least loaded of them.
    public let overloadShed: Bool

    public init(policy: PolicyName, config: PolicyConfig = PolicyConfig(), breaker: CircuitBreakerConfig = CircuitBreakerConfig(),
                health: HealthCheckConfig = HealthCheckConfig(), prefillPolicy: PolicyName? = nil, decodePolicy: PolicyName? = nil,
                policiesFromLabels: Bool = false, dpAware: Bool = false, overloadShed: Bool = false) {
        self.policyName = policy
        self.overloadShed = overloadShed
        self.dpAware = dpAware
        self.policiesFromLabels = policiesFromLabels
        self.rolePolicies = [.regular: policy, .prefill: prefillPolicy ?? policy, .decode: decodePolicy ?? policy]
        self.policyConfig = config
        self.breakerConfig = breaker
        self.healthConfig = health
    }

    public var all: [Worker] { workers.withLock { $0 } }

    public func worker(id: String) -> Worker? { all.first { $0.id == id } }
    public func worker(url: String) -> Worker? { all.first { $0.url.canonical == url } }

    /// A stable id derived from the canonical URL, so every router names a worker the same way.
    static func id(for url: WorkerURL) -> String {
        let hex = String(FNV1a.hash(url.canonical), radix: 16)
        return "w" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    @discardableResult
    public func add(url: WorkerURL, modelID: String?, role: WorkerRole = .regular, bootstrapPort: Int? = nil, labels: [String: String] = [:],
                    apiKey: String? = nil) throws(AddError) -> Worker {
        let worker = Worker(id: Self.id(for: url), url: url, modelID: modelID, role: role, bootstrapPort: bootstrapPort, labels: labels,
                            apiKey: apiKey, breaker: breakerConfig, health: healthConfig)
        let duplicate: Worker? = workers.withLock { list in
            if let existing = list.first(where: { $0.url == url }) { return existing }
            list.append(worker)
            return nil
        }
        if let duplicate { throw .duplicate(existingID: duplicate.id) }
        for handler in addedHandlers.withLock({ $0 }) { handler(worker) }
        return worker
    }

    /// Removes the worker from routing at once; requests already sent to it finish. Its routing
    /// state (tree entries, sticky keys) is purged from every model's policy.
    @discardableResult
    public func remove(id: String) -> Worker? {
        let removed: Worker? = workers.withLock { list in
            guard let i = list.firstIndex(where: { $0.id == id }) else { return nil }
            return list.remove(at: i)
        }
        guard let removed else { return nil }
        removed.markDraining()
        for box in policyBoxes { box.policy.withLock { $0.removeWorker(id: id) } }
        return removed
    }

    private var policyBoxes: [PolicyBox] { policies.withLock { Array($0.values) } }

    /// Policies kept at most: one per model the fleet serves, and any peer routers name. Past
    /// it, decisions go to the shared default policy instead of growing the table.
    public static let maxPolicies = 1024

    /// The policy kept under `key` (see `policyKey`), made on first use; `wanted`: the policy
    /// the model's workers ask for (IGW), which replaces one of another kind.
    private func box(for key: String, wanted: PolicyName? = nil) -> PolicyBox {
        policies.withLock { table in
            if let b = table[key], wanted == nil || b.name == wanted { return b }
            let role = Self.role(ofKey: key)
            if table[key] == nil, table.count >= Self.maxPolicies, let shared = table[Self.policyKey(nil, served: false, role: role)] { return shared }
            let b = PolicyBox(wanted ?? rolePolicies[role]!, config: policyConfig)
            table[key] = b
            return b
        }
    }

    /// Prefill and decode workers have policies of their own, kept under "prefill:<model>" and
    /// "decode:<model>" (names that also travel to the other routers' trees).
    private static func role(ofKey key: String) -> WorkerRole {
        for role in [WorkerRole.prefill, .decode] where key.hasPrefix(role.rawValue + ":") { return role }
        return .regular
    }

    private static func model(ofKey key: String) -> String {
        let role = role(ofKey: key)
        return role == .regular ? key : String(key.dropFirst(role.rawValue.count + 1))
    }


    /// Every model's decisions since the versions given (for the mesh), with the next versions.
    public func policySummaries(since versions: [String: UInt64]) -> [(model: String, delta: TreeDelta<UInt64, String>, version: UInt64)] {
        let boxes = policies.withLock { $0.map { ($0.key, $0.value) } }
        return boxes.compactMap { model, box in
            box.policy.withLock { $0.summary(since: versions[model] ?? 0) }.map { (model, $0.0, $0.1) }
        }
    }

    /// The models that have a policy now (the whole-tree export walks them one by one).
    public var policyModels: [String] { policies.withLock { Array($0.keys) } }

    /// The next chunk of `model`'s whole policy state (see `LoadBalancingPolicy.exportChunk`),
    /// built under the policy's lock; nil when the model has no policy any more.
    public func exportPolicyChunk(
        model: String, after cursor: inout TreeExportCursor<UInt64>, maxPathLength: Int,
        begin: (_ ancestors: [ArraySlice<UInt64>]) -> Bool,
        accept: (_ depth: Int, _ label: ArraySlice<UInt64>, _ owners: [TreeStamp<String>]) -> Bool
    ) -> Int? {
        guard let box = policies.withLock({ $0[model] }) else { return nil }
        return box.policy.withLock { $0.exportChunk(after: &cursor, maxPathLength: maxPathLength, begin: begin, accept: accept) }
    }

    /// Applies a chunk of another router's whole state to a model's policy; false when malformed.
    public func applyPolicyChunk(model: String, _ chunk: TreeChunk<UInt64, String>) -> Bool {
        box(for: model).policy.withLock { $0.apply(chunk: chunk) }
    }

    /// Applies another router's decisions to a model's policy.
    public func applyPolicySummary(model: String, _ delta: TreeDelta<UInt64, String>) {
        box(for: model).policy.withLock { $0.apply(summary: delta) }
    }

    /// Applies another router's sticky assignment to a model's policy.
    public func adoptAssignment(model: String, routingKey: String, worker: String?, now: UInt64) {
        box(for: model).policy.withLock { $0.adopt(routingKey: routingKey, worker: worker, now: now) }
    }

    /// The name the policy choosing a `role` worker for a request for `model` is kept under:
    /// the model when some worker of that role serves it, otherwise the shared default ("");
    /// prefixed with the role in PD mode.
    public func policyModel(_ model: String?, role: WorkerRole = .regular) -> String {
        Self.policyKey(model, served: model.map { m in all.contains { $0.modelID == m && $0.role == role } } ?? false, role: role)
    }

    /// A model name is whatever a client writes: only a model some worker serves gets a policy
    /// of its own; others (which only workers of unknown model can take) share the default one,
    /// so made-up names create no routing state.
    private static func policyKey(_ model: String?, served: Bool, role: WorkerRole = .regular) -> String {
        let name = served ? model ?? "" : ""
        return role == .regular ? name : role.rawValue + ":" + name
    }

    /// When `manual` last used a routing key for `model` (monotonic ms), nil when it holds none.
    public func sessionLastUse(model: String, routingKey: String) -> UInt64? {
        let box = policies.withLock { $0[model] }
        return box?.policy.withLock { ($0 as? ManualPolicy)?.lastUse(of: routingKey) }
    }

    /// Periodic upkeep of every model's policy (tree eviction, idle keys); the policies of
    /// models no worker serves any more are dropped.
    public func maintainPolicies(now: UInt64) {
        let served = Set(all.compactMap(\.modelID))
        let boxes: [PolicyBox] = policies.withLock { table in
            for key in table.keys {
                let model = Self.model(ofKey: key)
                if !model.isEmpty && !served.contains(model) { table[key] = nil }
            }
            return Array(table.values)
        }
        for box in boxes { box.policy.withLock { $0.maintain(now: now) } }
    }

    /// Routing state size per model (tree bytes for cache_aware, keys for manual), for metrics.
    public var policyStateSizes: [(model: String, size: Int)] {
        let boxes = policies.withLock { $0.map { ($0.key, $0.value) } }
        return boxes.map { model, box in (model.isEmpty ? "default" : model, box.policy.withLock { $0.stateSize }) }
    }

    /// The distinct models served, in the order workers were added.
    public var models: [String] {
        var seen = Set<String>()
        return all.compactMap(\.modelID).filter { seen.insert($0).inserted }
    }

    /// Chooses a worker for a request naming `model` (nil: any worker).
    ///
    /// A worker whose model is not known yet (its `/v1/models` has not answered) may serve any
    /// model, so a new worker is usable before discovery finishes.
    public func select<R: RandomNumberGenerator>(model: String?, request: RoutingRequest, avoiding: Set<String> = [], role: WorkerRole = .regular,
                                                 using rng: inout R) -> Outcome {
        var snapshot = all
        if snapshot.contains(where: { $0.role != role }) { snapshot = snapshot.filter { $0.role == role } }
        var served = false
        let chosen = snapshot.filter { w in
            guard let model else { return true }
            let m = w.modelID
            if m == model { served = true; return true }
            return m == nil
        }
        guard !chosen.isEmpty else { return snapshot.isEmpty ? .noneAvailable : .unknownModel }
        // With --dp-aware a worker of N ranks is N candidates ("id@rank"): the policy balances
        // ranks, and cache_aware keeps a tree per rank.
        var targets: [(worker: Worker, rank: Int?)] = []
        for w in chosen {
            let ranks = dpAware ? w.dpSize : 1
            if ranks > 1 { for r in 0..<ranks { targets.append((w, r)) } } else { targets.append((w, nil)) }
        }
        let wanted = policiesFromLabels && served ? chosen.lazy.compactMap { $0.labels["policy"].flatMap(PolicyName.init(rawValue:)) }.first : nil
        let key = Self.policyKey(model, served: served, role: role)
        let box = box(for: key, wanted: wanted)
        // The engines' reports beyond their load, only for a policy that reads them; a DP rank
        // has no report of its own.
        let signals = box.name.readsEngineSignals(policyConfig)
        var candidates = targets.map { t in
            let c = WorkerCandidate(id: t.rank.map { "\(t.worker.id)@\($0)" } ?? t.worker.id, url: t.worker.url.canonical,
                                    isAvailable: t.worker.isAvailable && t.worker.breakerAllows(now: request.now),
                                    inFlight: t.rank.map { t.worker.fleetRankLoad($0) } ?? t.worker.fleetInFlight,
                                    reportedLoad: t.rank == nil ? t.worker.reportedLoad : nil)
            return signals && t.rank == nil ? t.worker.withEngineSignals(c, now: request.now) : c
        }
        // Prefer workers that have not just failed this request, when any other can serve.
        if !avoiding.isEmpty, candidates.indices.contains(where: { candidates[$0].isAvailable && !avoiding.contains(targets[$0].worker.id) }) {
            for i in candidates.indices where avoiding.contains(targets[i].worker.id) { candidates[i].isAvailable = false }
        }
        // Workers not alive (wedged, stalled: `Liveness`) and, among the alive, overloaded ones
        // (their engines report a queue or a KV cache over the thresholds; `LoadMonitor` keeps
        // the verdict) are left out while another can serve (`RoutingScreen`).
        var fallback: Choice.Fallback?
        if targets.contains(where: { !$0.worker.isAlive || $0.worker.isOverloaded(now: request.now) }) {
            let screen = RoutingScreen.decide(candidates.indices.map { i in
                let w = targets[i].worker
                return RoutingScreen.Candidate(usable: candidates[i].isAvailable, alive: w.isAlive, overload: w.overload(now: request.now),
                                               inFlight: candidates[i].inFlight)
            }, shed: overloadShed)
            func only(_ chosen: Int) { for i in candidates.indices where i != chosen { candidates[i].isAvailable = false } }
            switch screen.outcome {
            case .route: for i in screen.excluded { candidates[i].isAvailable = false }
            case .shed: return .overloaded
            case .livenessFallback(let least): only(least); fallback = .liveness
            case .overloadFallback(let least): only(least); fallback = .overload
            }
        }
        let selection = box.policy.withLock { $0.select(request, from: candidates, using: &rng) }
        guard let selection else { return .noneAvailable }
        let target = targets[selection.index]
        return .worker(Choice(worker: target.worker, reason: selection.reason, policy: box.name, rank: target.rank,
                              policyKey: key, candidate: candidates[selection.index].id, matchRatio: selection.matchRatio,
                              fallback: fallback))
    }
}
