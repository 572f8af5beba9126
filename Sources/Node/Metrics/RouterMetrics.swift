import Prometheus
import Reliability
import Synchronization

/// The router's Prometheus metrics. Where the reference gateway has a metric for something smg
/// does, the family has its name, type and label names (`docs/metrics.md` lists every family
/// and what it maps to); smg's own families (mesh, policy state, admission results, history,
/// Redis pools) sit beside them.
///
/// Handles are created once per label set and cached, so the hot path does a dictionary
/// lookup and an atomic add per metric. Per-worker gauges are filled at scrape time from the
/// registry's atomics instead of being updated on every request.
public final class RouterMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let buckets: [Double]

    /// What the reference labels `router_type` and `connection_mode`: smg routes HTTP to HTTP
    /// workers only (the reference also has gRPC).
    static let routerType = "http"
    static let connectionMode = "http"

    /// The labels of one routed request the request families share: the model as a bounded
    /// label (the served id, `unknown` when the request names none, `other` for a model no
    /// worker is known to serve), the endpoint (`chat`, `completions`, `generate`, ...), and
    /// `backend_type` (`regular`, or `pd` for a prefill-decode pair).
    struct RouteLabels: Hashable {
        let model: String
        let endpoint: String
        let backend: String

        /// The labels of a request that names `model` (nil: none), before or without a chosen
        /// worker: a name counts as itself only if a registered worker serves it.
        static func of(model: String?, endpoint: String, backend: String = "regular", registry: WorkerRegistry) -> RouteLabels {
            guard let model else { return RouteLabels(model: "unknown", endpoint: endpoint, backend: backend) }
            let served = registry.all.contains { $0.modelID == model }
            return RouteLabels(model: served ? model : "other", endpoint: endpoint, backend: backend)
        }
    }

    private struct Cache {
        var http: [HTTPKey: (Counter, ValueHistogram)] = [:]
        var responses: [ResponseKey: Counter] = [:]
        var routed: [RoutedKey: Counter] = [:]
        var routeDurations: [RouteLabels: ValueHistogram] = [:]
        var routerErrors: [ErrorKey: Counter] = [:]
        var upstreamResponses: [Int: Counter] = [:]
        var sends: [WorkerModelKey: Counter] = [:]
        var selections: [SelectionKey: Counter] = [:]
        var decisions: [DecisionKey: Counter] = [:]
        var bodyPaths: [String: Counter] = [:]
        var branches: [String: Counter] = [:]
        var matchRatio: ValueHistogram?
        var outcomes: [OutcomeKey: Counter] = [:]
        var workerErrors: [WorkerErrorKey: Counter] = [:]
        var stateSizes: [String: Gauge] = [:]
        var named: [NamedKey: Counter] = [:]
        var namedGauges: [NamedKey: Gauge] = [:]
        var perWorker: [String: WorkerGauges] = [:]
        var poolSizes: [PoolKey: Gauge] = [:]
        var historyDurations: [String: ValueHistogram] = [:]
        var backoffs: [Int: ValueHistogram] = [:]
        var pdPrefillDuration: ValueHistogram?
    }
    private let cache = Mutex(Cache())
    // Label sets as hashable keys, so a lookup builds no string.
    private struct HTTPKey: Hashable { let method: String, path: String }
    private struct ResponseKey: Hashable { let path: String, status: Int, errorCode: String }
    private struct RoutedKey: Hashable { let route: RouteLabels, streaming: Bool }
    private struct ErrorKey: Hashable { let route: RouteLabels, errorType: String }
    private struct WorkerModelKey: Hashable { let worker: String, model: String }
    private struct SelectionKey: Hashable { let workerType: String, model: String, policy: String }
    private struct DecisionKey: Hashable { let policy: String, model: String, reason: String }
    private struct OutcomeKey: Hashable { let worker: String, success: Bool }
    private struct WorkerErrorKey: Hashable { let workerType: String, errorType: String }
    private struct PoolKey: Hashable { let workerType: String, model: String }
    /// A counter by name and its label pairs, flattened.
    private struct NamedKey: Hashable { let name: String, labels: [String] }
    /// The gauges each worker has, set at scrape time.
    private struct WorkerGauges {
        let active, breaker, health, failures, successes: Gauge
    }
    private let activeRequests: Gauge
    private let activeConnections: Gauge
    private let upstreamConnects: Counter
    private let queueDepth: Gauge
    private let admittedInFlight: Gauge

    public init(durationBuckets: [Double]) {
        buckets = durationBuckets
        activeRequests = registry.makeGauge(descriptor: Self.descriptor("smg_http_requests_active", "Requests the router is serving right now"))
        activeConnections = registry.makeGauge(descriptor: Self.descriptor("smg_http_connections_active", "Currently active HTTP connections"))
        upstreamConnects = registry.makeCounter(descriptor: Self.descriptor("smg_worker_connections_opened_total", "New TCP connections opened to workers (pool misses)"))
        queueDepth = registry.makeGauge(descriptor: Self.descriptor("smg_admission_queue_depth", "Requests currently parked in the admission queue"))
        admittedInFlight = registry.makeGauge(descriptor: Self.descriptor("smg_admission_inflight", "Requests currently holding an admission token (the --max-concurrent-requests count)"))
    }

    /// swift-prometheus wants a name split as base + unit; ours are written whole.
    private static func descriptor(_ fullName: String, _ help: String) -> MetricNameDescriptor {
        let cut = fullName.lastIndex(of: "_")!
        return MetricNameDescriptor(metricName: String(fullName[..<cut]), unitName: String(fullName[fullName.index(after: cut)...]), helpText: help)
    }

    private static func cached<K: Hashable, V>(_ dict: inout [K: V], _ key: K, _ make: () -> V) -> V {
        if let v = dict[key] { return v }
        let v = make()
        dict[key] = v
        return v
    }

    private func routeLabels(_ r: RouteLabels) -> [(String, String)] {
        [("router_type", Self.routerType), ("backend_type", r.backend), ("connection_mode", Self.connectionMode), ("model", r.model), ("endpoint", r.endpoint)]
    }

    // MARK: HTTP

    /// One HTTP request finished (any route, any status). `errorCode` is the code of the JSON
    /// error the router answered with (empty for a worker's answer or a success), or
    /// `client_closed_request` with status 499 when the client left first.
    func httpRequest(method: String, path: String, status: Int, errorCode: String, seconds: Double) {
        let (handles, response) = cache.withLock { c in
            (Self.cached(&c.http, HTTPKey(method: method, path: path)) {
                let labels = [("method", method), ("path", path)]
                return (registry.makeCounter(descriptor: Self.descriptor("smg_http_requests_total", "Total HTTP requests by method and path"), labels: labels),
                        registry.makeValueHistogram(descriptor: Self.descriptor("smg_http_request_duration_seconds", "HTTP request duration by method and path, from the request head to the end of the response"),
                                                    labels: labels, buckets: buckets))
            },
            Self.cached(&c.responses, ResponseKey(path: path, status: status, errorCode: errorCode)) {
                registry.makeCounter(descriptor: Self.descriptor("smg_http_responses_total", "Total HTTP responses by path, status_code and error_code (the router's JSON error code; empty when a worker answered or nothing failed; 499 client_closed_request when the client left first)"),
                                     labels: [("path", path), ("status_code", String(status)), ("error_code", errorCode)])
            })
        }
        handles.0.increment()
        handles.1.record(seconds)
        response.increment()
    }

    /// Client connections the router closed or turned away: header_timeout, body_timeout,
    /// idle_timeout, max_connections.
    func connectionRefused(reason: String) {
        count("smg_http_connections_refused_total", "Client connections closed or refused by the router's limits", [("reason", reason)])
    }

    func requestStarted() { activeRequests.increment() }
    func requestEnded() { activeRequests.decrement() }

    // MARK: routing

    /// An inference request was routed (its first decision, before any worker answered): what
    /// was asked, which policy chose a worker of which type, and why.
    func routed(_ route: RouteLabels, streaming: Bool, workerType: String, policy: String, reason: String, matchRatio: Double?, bodyReason: String) {
        let handles = cache.withLock { c in
            var h = [
                Self.cached(&c.selections, SelectionKey(workerType: workerType, model: route.model, policy: policy)) {
                    registry.makeCounter(descriptor: Self.descriptor("smg_worker_selection_total", "Worker selection events by worker_type, connection_mode, model, policy"),
                                         labels: [("worker_type", workerType), ("connection_mode", Self.connectionMode), ("model", route.model), ("policy", policy)])
                },
                Self.cached(&c.decisions, DecisionKey(policy: policy, model: route.model, reason: reason)) {
                    registry.makeCounter(descriptor: Self.descriptor("smg_policy_decisions_total", "Routing decisions by branch (cache_hit, cache_miss, imbalance, sticky, ...)"),
                                         labels: [("policy", policy), ("model", route.model), ("reason", reason)])
                },
            ]
            // A PD request is decided twice (its prefill, then its decode worker): the request
            // counts once, with its decode decision.
            if workerType != "prefill" {
                h.append(Self.cached(&c.routed, RoutedKey(route: route, streaming: streaming)) {
                    registry.makeCounter(descriptor: Self.descriptor("smg_router_requests_total", "Total routed requests by router_type, backend_type, connection_mode, model, endpoint, streaming"),
                                         labels: routeLabels(route) + [("streaming", String(streaming))])
                })
                h.append(Self.cached(&c.bodyPaths, bodyReason) {
                    registry.makeCounter(descriptor: Self.descriptor("smg_router_request_body_path_total", "Per-request body-path decisions by path (smg reads every inference body whole: buffered) and reason"),
                                         labels: [("path", "buffered"), ("reason", bodyReason)])
                })
            }
            var ratio: ValueHistogram?
            if policy == "cache_aware", let branch = Self.cacheAwareBranch(reason) {
                h.append(Self.cached(&c.branches, branch) {
                    registry.makeCounter(descriptor: Self.descriptor("smg_cache_aware_policy_branch_total", "Cache-aware selection branch: tree_match (a worker holds enough of the prompt), spill (not enough cached anywhere: the worker with the most spare cache), imbalance (load spread too wide: the least loaded)"),
                                         labels: [("branch", branch)])
                })
                ratio = matchRatio == nil ? nil : c.matchRatio ?? {
                    let made = registry.makeValueHistogram(descriptor: Self.descriptor("smg_cache_aware_match_ratio", "Cache-aware best prefix match ratio per request (matched/input, 0..1)"),
                                                           buckets: [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1])
                    c.matchRatio = made
                    return made
                }()
            }
            return (h, ratio)
        }
        for counter in handles.0 { counter.increment() }
        if let matchRatio { handles.1?.record(matchRatio) }
    }

    /// The reference's branch names for cache_aware's reasons (nil for other policies' reasons).
    static func cacheAwareBranch(_ reason: String) -> String? {
        switch reason {
        case "cache_hit": return "tree_match"
        case "cache_miss": return "spill"
        case "imbalance": return "imbalance"
        case "warmup": return "warmup"
        default: return nil
        }
    }

    /// An attempt (or a PD half) was sent to `worker`, which serves `model`.
    func sentToWorker(_ worker: String, model: String) {
        cache.withLock { c in
            Self.cached(&c.sends, WorkerModelKey(worker: worker, model: model)) {
                registry.makeCounter(descriptor: Self.descriptor("smg_worker_requests_total", "Requests dispatched to a worker by worker (URL) and model, counted at each send"),
                                     labels: [("worker", worker), ("model", model)])
            }
        }.increment()
    }

    /// A routed request ended (answered, failed or abandoned), `seconds` after it was planned.
    func routeEnded(_ route: RouteLabels, seconds: Double) {
        cache.withLock { c in
            Self.cached(&c.routeDurations, route) {
                registry.makeValueHistogram(descriptor: Self.descriptor("smg_router_request_duration_seconds", "Router request duration by router_type, backend_type, connection_mode, model, endpoint"),
                                            labels: routeLabels(route), buckets: buckets)
            }
        }.record(seconds)
    }

    /// An inference request ended in an error the router produced.
    func routerError(_ route: RouteLabels, code: APIError.Code) { routerError(route, errorType: code.rawValue) }

    func routerError(_ route: RouteLabels, errorType: String) {
        cache.withLock { c in
            Self.cached(&c.routerErrors, ErrorKey(route: route, errorType: errorType)) {
                registry.makeCounter(descriptor: Self.descriptor("smg_router_request_errors_total", "Router errors by router_type, backend_type, connection_mode, model, endpoint, error_type"),
                                     labels: routeLabels(route) + [("error_type", errorType)])
            }
        }.increment()
    }

    /// Sets the per-model routing state gauge (tree bytes for cache_aware, keys for manual).
    func policyState(_ sizes: [(model: String, size: Int)], policy: String) {
        cache.withLock { c in
            let current = Set(sizes.map(\.model))
            for (model, gauge) in c.stateSizes where !current.contains(model) {
                registry.unregisterGauge(gauge)
                c.stateSizes[model] = nil
            }
            for (model, size) in sizes {
                Self.cached(&c.stateSizes, model) {
                    registry.makeGauge(descriptor: Self.descriptor("smg_policy_state_size", "Routing state per model: prompt bytes in the cache-aware tree, or sticky keys"), labels: [("model", model), ("policy", policy)])
                }.set(to: Double(size))
            }
        }
    }

    // MARK: workers

    /// A worker answered with a response head (the primary half of an attempt).
    func upstreamResponse(status: Int) {
        cache.withLock { c in
            Self.cached(&c.upstreamResponses, status) {
                registry.makeCounter(descriptor: Self.descriptor("smg_router_upstream_responses_total", "Upstream backend HTTP responses by router_type, status_code, error_code"),
                                     labels: [("router_type", Self.routerType), ("status_code", String(status)), ("error_code", "")])
            }
        }.increment()
    }

    /// An attempt's half on `worker` ended: the breaker's outcome, and on failure its kind
    /// (`backend_error`: a 5xx answer, `timeout`, `connection_error`).
    func attemptEnded(worker: String, workerType: String, success: Bool, errorType: String?) {
        let handles = cache.withLock { c in
            (Self.cached(&c.outcomes, OutcomeKey(worker: worker, success: success)) {
                registry.makeCounter(descriptor: Self.descriptor("smg_worker_cb_outcomes_total", "Circuit breaker outcomes by worker and outcome (success/failure)"),
                                     labels: [("worker", worker), ("outcome", success ? "success" : "failure")])
            },
            errorType.map { type in
                Self.cached(&c.workerErrors, WorkerErrorKey(workerType: workerType, errorType: type)) {
                    registry.makeCounter(descriptor: Self.descriptor("smg_worker_errors_total", "Worker-level errors by worker_type, connection_mode, error_type"),
                                         labels: [("worker_type", workerType), ("connection_mode", Self.connectionMode), ("error_type", type)])
                }
            })
        }
        handles.0.increment()
        handles.1?.increment()
    }

    func upstreamConnectionOpened() { upstreamConnects.increment() }

    /// A retry is about to be made after `delayMs`: the `attempt`-th retry of the request.
    func retry(workerType: String, endpoint: String, attempt: Int, delayMs: Int) {
        count("smg_worker_retries_total", "Total retry attempts by worker_type and endpoint", [("worker_type", workerType), ("endpoint", endpoint)])
        cache.withLock { c in
            let label = min(attempt, 16)  // bounded whatever --retry-max-retries says
            return Self.cached(&c.backoffs, label) {
                registry.makeValueHistogram(descriptor: Self.descriptor("smg_worker_retry_backoff_seconds", "Retry backoff duration by attempt number"),
                                            labels: [("attempt", String(label))], buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60])
            }
        }.record(Double(delayMs) / 1000)
    }

    func retriesExhausted(workerType: String, endpoint: String) {
        count("smg_worker_retries_exhausted_total", "Requests that exhausted all retries by worker_type and endpoint", [("worker_type", workerType), ("endpoint", endpoint)])
    }

    func breakerTransition(worker: String, _ change: CircuitBreaker.Transition) {
        count("smg_worker_cb_transitions_total", "Circuit breaker state transitions by worker, from, to", [("worker", worker), ("from", change.from.rawValue), ("to", change.to.rawValue)])
    }

    func healthCheck(workerType: String, ok: Bool) {
        count("smg_worker_health_checks_total", "Health check results by worker_type and result", [("worker_type", workerType), ("result", ok ? "success" : "failure")])
    }

    // MARK: admission

    /// Admission outcomes: admitted, queued, admitted_from_queue, rejected_queue_full,
    /// rejected_queue_timeout; the reference's allowed/rejected count beside them.
    func admission(_ result: String) {
        count("smg_router_admission_total", "Admission decisions by result", [("result", result)])
        switch result {
        case "admitted", "admitted_from_queue": count("smg_http_rate_limit_total", "Rate limiting decisions by result (allowed/rejected)", [("result", "allowed")])
        case "rejected_queue_full", "rejected_queue_timeout": count("smg_http_rate_limit_total", "Rate limiting decisions by result (allowed/rejected)", [("result", "rejected")])
        default: break
        }
    }

    func admissionGauges(inFlight: Int, queued: Int) {
        admittedInFlight.set(to: Double(inFlight))
        queueDepth.set(to: Double(queued))
    }

    func connectionsActive(_ n: Int) { activeConnections.set(to: Double(n)) }

    // MARK: history, sessions, discovery, PD

    /// One history operation (Conversations API): its result (`ok`, `not_found`, `invalid`,
    /// `unavailable`, `error`) and how long the store took.
    func historyOperation(_ op: String, result: String, seconds: Double) {
        count("smg_history_operations_total", "History operations by operation and result", [("op", op), ("result", result)])
        cache.withLock { c in
            Self.cached(&c.historyDurations, op) {
                registry.makeValueHistogram(descriptor: Self.descriptor("smg_history_operation_duration_seconds", "Time a history operation took"),
                                            labels: [("op", op)], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5])
            }
        }.record(seconds)
    }

    /// The memory history store let records go (by kind and why) and holds `bytes` now.
    func historyMemory(evicted: [(kind: String, reason: String)], bytes: Int) {
        for (kind, reason) in evicted {
            count("smg_history_memory_evictions_total", "Records the memory history store let go, by kind and reason (count, bytes, retention)",
                  [("kind", kind), ("reason", reason)])
        }
        setGauge("smg_history_memory_bytes", "Bytes (as JSON) the memory history store holds", to: Double(bytes))
    }

    /// What the memory history store holds (set at scrape time).
    func historyMemoryRecords(responses: Int, conversations: Int, items: Int) {
        let help = "Records the in-memory history backend holds, by kind (responses, conversations, items)"
        setGauge("smg_history_memory_records", help, [("kind", "responses")], to: Double(responses))
        setGauge("smg_history_memory_records", help, [("kind", "conversations")], to: Double(conversations))
        setGauge("smg_history_memory_records", help, [("kind", "items")], to: Double(items))
    }

    /// A read of the `--discovery-file` manifest: `ok`, `invalid`, `missing` or `unreadable`.
    func discoveryRead(_ result: String) {
        count("smg_discovery_manifest_reads_total", "Reads of the discovery manifest by result", [("result", result)])
    }

    /// A list of pods by Kubernetes discovery (`watch`: workers, prefill, decode, routers):
    /// `ok`, `expired` (a page's continue token was too old; the list starts over) or `error`.
    func kubeList(_ watch: String, _ result: String) {
        count("smg_discovery_kubernetes_lists_total", "Pod lists by Kubernetes discovery, by watch and result", [("watch", watch), ("result", result)])
    }

    /// A watch event received (`added`, `modified`, `deleted`, `bookmark`, `error`).
    func kubeEvent(_ watch: String, _ type: String) {
        count("smg_discovery_kubernetes_events_total", "Pod watch events received by Kubernetes discovery, by watch and type", [("watch", watch), ("type", type)])
    }

    /// A watch that ended and is opened again: `ended` (the server's timeout), `expired` (410:
    /// the pods are listed again) or `error` (after a pause).
    func kubeWatchRestart(_ watch: String, _ reason: String) {
        count("smg_discovery_kubernetes_watch_restarts_total", "Pod watches opened again by Kubernetes discovery, by watch and reason", [("watch", watch), ("reason", reason)])
    }

    /// The pods a watch knows now (serving or not).
    func kubePods(_ watch: String, _ n: Int) {
        setGauge("smg_discovery_kubernetes_pods", "Pods matching each Kubernetes discovery selector", [("watch", watch)], to: Double(n))
    }

    /// A sticky session looked up in Redis (`found`, `missing`, `unavailable`: down or too slow).
    func sessionLookup(_ result: String) {
        count("smg_session_store_lookups_total", "Sticky-session reads from Redis, by result", [("result", result)])
    }

    /// A Redis pool's connections: open, in use (a command in flight), and the bound.
    func redisPool(_ use: String, _ redis: RedisClient) {
        let usage = redis.poolUsage
        setGauge("smg_redis_pool_connections", "Redis connections by use (history, sessions) and state", [("use", use), ("state", "open")], to: Double(usage.open))
        setGauge("smg_redis_pool_connections", "Redis connections by use (history, sessions) and state", [("use", use), ("state", "in_use")], to: Double(usage.inUse))
        setGauge("smg_redis_pool_max_connections", "The most Redis connections a pool opens (--redis-pool-max-size)", [("use", use)], to: Double(redis.maxConnections))
    }

    /// PD: how long a prefill worker took to answer its half (the time the KV cache was ready).
    func pdPrefillDuration(seconds: Double) {
        cache.withLock { c in
            if let h = c.pdPrefillDuration { return h }
            let h = registry.makeValueHistogram(descriptor: Self.descriptor("smg_pd_prefill_duration_seconds", "Time prefill workers took to answer their half of a PD request"),
                                                buckets: buckets)
            c.pdPrefillDuration = h
            return h
        }.record(seconds)
    }

    /// PD: a prefill half that failed (`transport`, `timeout`, `status_<code>`): the decode
    /// worker could not get the KV cache, and the attempt is retried with a new pair.
    func pdPrefillFailure(worker: String, reason: String) {
        count("smg_pd_prefill_failures_total", "Prefill halves of PD requests that failed, by worker and reason", [("worker", worker), ("reason", reason)])
    }

    /// A batch of spans the collector did not take (down, refused, too slow): dropped.
    func traceExportFailed() {
        count("smg_trace_export_failures_total", "Span batches the OTLP collector did not take (dropped, never retried)", [])
    }

    // MARK: worker load

    /// A poll of a worker's `/v1/loads` started (the reference's `mode` is always `poll` here:
    /// no worker pushes its load).
    func engineLoadPoll(worker: String) {
        count("smg_engine_load_polls_total", "Load-monitor polls by worker and mode (poll: GET /v1/loads)", [("worker", worker), ("mode", "poll")])
    }

    /// Every usable worker was overloaded: the request was refused (`--worker-overload-shed`)
    /// or sent to the least loaded of them. `stage`: where it was decided (selection).
    func workerOverload(shed: Bool, stage: String = "selection") {
        if shed {
            count("smg_worker_overload_shed_total", "Requests shed because every worker for the model is overloaded, by stage", [("stage", stage)])
        } else {
            count("smg_worker_overload_fallback_total", "Requests routed to the least-loaded worker because every worker for the model is overloaded and shedding is off, by stage", [("stage", stage)])
        }
    }

    /// A keep-alive comment went to a client whose event stream had been silent (`--sse-keepalive-secs`).
    func sseKeepalive() {
        count("smg_sse_keepalives_total", "Keep-alive comments written into event streams the worker had left silent for --sse-keepalive-secs", [])
    }

    /// Every usable worker was not alive (wedged, stalled): the request went to the least loaded.
    func livenessFallback(stage: String = "selection") {
        count("smg_worker_liveness_fallback_total", "Requests routed to the least-loaded worker because every usable worker for the model is wedged or stalled, by stage", [("stage", stage)])
    }

    /// A worker was left out of routing as wedged or stalled (`reason`).
    func livenessVeto(worker: String, reason: String) {
        count("smg_worker_stall_transitions_total", "Times the liveness veto was set on a worker, by worker and reason", [("worker", worker), ("reason", reason)])
    }

    /// The counters of what routing did when it left everyone out are exported from the start
    /// (at 0), so a dashboard's rate has a series before the first time: both overload outcomes
    /// while overload protection is on, the liveness fallback while a liveness rule is.
    func prepareRoutingScreen(overload: Bool, liveness: Bool, stage: String = "selection") {
        var families: [(String, String)] = []
        if overload {
            families += [("smg_worker_overload_shed_total", "Requests shed because every worker for the model is overloaded, by stage"),
                         ("smg_worker_overload_fallback_total", "Requests routed to the least-loaded worker because every worker for the model is overloaded and shedding is off, by stage")]
        }
        if liveness {
            families.append(("smg_worker_liveness_fallback_total", "Requests routed to the least-loaded worker because every usable worker for the model is wedged or stalled, by stage"))
        }
        cache.withLock { c in
            for (name, help) in families {
                _ = Self.cached(&c.named, NamedKey(name: name, labels: ["stage", stage])) {
                    registry.makeCounter(descriptor: Self.descriptor(name, help), labels: [("stage", stage)])
                }
            }
        }
    }

    /// What the workers' engines last reported (per data-parallel rank) and how many workers
    /// are overloaded now, per model: set at scrape time.
    private func refreshEngineLoads(_ workers: [Worker]) {
        let now = MonotonicClock.nowMs()
        var overloaded: [String: Int] = [:]
        for w in workers {
            let model = w.modelID ?? "unknown"
            overloaded[model, default: 0] += w.isOverloaded(now: now) ? 1 : 0
            guard let report = w.engineLoad else { continue }
            for r in report.load.ranks {
                let labels = [("worker", w.url.canonical), ("model", model), ("dp_rank", String(r.rank))]
                setGauge("smg_engine_running_requests", "Engine-reported running requests by worker, model, dp_rank", labels, to: Double(r.running))
                setGauge("smg_engine_waiting_requests", "Engine-reported waiting requests by worker, model, dp_rank", labels, to: Double(r.waiting))
                if let usage = r.tokenUsage {
                    setGauge("smg_engine_token_usage", "Engine-reported KV token usage ratio (0.0-1.0) by worker, model, dp_rank", labels, to: usage)
                }
            }
        }
        for w in workers {
            for reason in ["stall", "wedge"] {
                // A series only while the veto holds: no pair of zeros per worker of a healthy fleet.
                let labels = [("worker", w.url.canonical), ("reason", reason)]
                if w.livenessVerdict.reason == reason {
                    setGauge("smg_worker_stalled", "Liveness veto on a worker: 1 while routing skips it, by worker and reason", labels, to: 1)
                } else {
                    removeGauge("smg_worker_stalled", labels)
                }
            }
        }
        for w in workers {
            setGauge("smg_worker_http2", "1 while calls to the worker are HTTP/2 streams (--upstream-http2, answered when registered), 0 on HTTP/1.1, by worker",
                     [("worker", w.url.canonical)], to: w.speaksHTTP2 ? 1 : 0)
        }
        for (model, n) in overloaded {
            setGauge("smg_workers_overloaded", "Workers currently flagged overloaded and excluded from routing, by model", [("model", model)], to: Double(n))
        }
    }

    // MARK: generic

    private func count(_ name: String, _ help: String, _ labels: [(String, String)]) {
        cache.withLock { c in
            Self.cached(&c.named, NamedKey(name: name, labels: labels.flatMap { [$0.0, $0.1] })) {
                registry.makeCounter(descriptor: Self.descriptor(name, help), labels: labels)
            }
        }.increment()
    }

    /// Sets a gauge by name and labels, created on first use: for values read at scrape time
    /// from another part of the router (the mesh's counters).
    func setGauge(_ name: String, _ help: String, _ labels: [(String, String)] = [], to value: Double) {
        cache.withLock { c in
            Self.cached(&c.namedGauges, NamedKey(name: name, labels: labels.flatMap { [$0.0, $0.1] })) {
                registry.makeGauge(descriptor: Self.descriptor(name, help), labels: labels)
            }.set(to: value)
        }
    }

    /// Removes a gauge `setGauge` made, if it exists.
    func removeGauge(_ name: String, _ labels: [(String, String)]) {
        cache.withLock { c in
            guard let gauge = c.namedGauges.removeValue(forKey: NamedKey(name: name, labels: labels.flatMap { [$0.0, $0.1] })) else { return }
            registry.unregisterGauge(gauge)
        }
    }

    // MARK: scrape

    /// Refreshes worker gauges from the registry; called right before each scrape. Series of
    /// removed workers go with them, counters included.
    func refresh(workers: [Worker]) {
        // Per role only when there are prefill or decode workers (PD mode), so a regular fleet
        // exports no extra series.
        if workers.contains(where: { $0.role != .regular }) {
            for role in WorkerRole.allCases {
                let of = workers.filter { $0.role == role }
                setGauge("smg_workers_by_type", "Workers by type (regular, prefill, decode) and state", [("type", role.rawValue), ("state", "registered")], to: Double(of.count))
                setGauge("smg_workers_by_type", "Workers by type (regular, prefill, decode) and state", [("type", role.rawValue), ("state", "available")], to: Double(of.filter(\.isAvailable).count))
            }
        }
        var pools: [PoolKey: Int] = [:]
        for w in workers { pools[PoolKey(workerType: w.workerType, model: w.modelID ?? "unknown"), default: 0] += 1 }
        cache.withLock { c in
            for (key, gauge) in c.poolSizes where pools[key] == nil {
                registry.unregisterGauge(gauge)
                c.poolSizes[key] = nil
            }
            for (key, n) in pools {
                Self.cached(&c.poolSizes, key) {
                    registry.makeGauge(descriptor: Self.descriptor("smg_worker_pool_size", "Current worker pool size by worker_type, connection_mode, model"),
                                       labels: [("worker_type", key.workerType), ("connection_mode", Self.connectionMode), ("model", key.model)])
                }.set(to: Double(n))
            }
            let live = Set(workers.map(\.url.canonical))
            for (url, g) in c.perWorker where !live.contains(url) {
                for gauge in [g.active, g.breaker, g.health, g.failures, g.successes] { registry.unregisterGauge(gauge) }
                c.perWorker[url] = nil
            }
            for (key, counter) in c.sends where !live.contains(key.worker) {
                registry.unregisterCounter(counter)
                c.sends[key] = nil
            }
            for (key, counter) in c.outcomes where !live.contains(key.worker) {
                registry.unregisterCounter(counter)
                c.outcomes[key] = nil
            }
            func gone(_ key: NamedKey) -> Bool {
                guard let i = key.labels.firstIndex(of: "worker"), i % 2 == 0, i + 1 < key.labels.count else { return false }
                return !live.contains(key.labels[i + 1])
            }
            for (key, counter) in c.named where gone(key) {
                registry.unregisterCounter(counter)
                c.named[key] = nil
            }
            for (key, gauge) in c.namedGauges where gone(key) {
                registry.unregisterGauge(gauge)
                c.namedGauges[key] = nil
            }
            for w in workers {
                let url = w.url.canonical
                let g = Self.cached(&c.perWorker, url) {
                    let labels = [("worker", url)]
                    return WorkerGauges(
                        active: registry.makeGauge(descriptor: Self.descriptor("smg_worker_requests_active", "Currently running requests per worker"), labels: labels),
                        breaker: registry.makeGauge(descriptor: Self.descriptor("smg_worker_cb_state", "Circuit breaker state per worker (0=closed, 1=open, 2=half_open)"), labels: labels),
                        health: registry.makeGauge(descriptor: Self.descriptor("smg_worker_health", "Worker health status (1=healthy and not draining, 0 otherwise)"), labels: labels),
                        failures: registry.makeGauge(descriptor: Self.descriptor("smg_worker_cb_consecutive_failures", "Current consecutive failure count per worker"), labels: labels),
                        successes: registry.makeGauge(descriptor: Self.descriptor("smg_worker_cb_consecutive_successes", "Current consecutive success count per worker"), labels: labels))
                }
                g.active.set(to: Double(w.inFlight))
                g.breaker.set(to: w.breakerState == .closed ? 0 : (w.breakerState == .open ? 1 : 2))
                g.health.set(to: w.isAvailable ? 1.0 : 0.0)
                let streaks = w.breakerStreaks
                g.failures.set(to: Double(streaks.failures))
                g.successes.set(to: Double(streaks.successes))
            }
        }
    }

    public func render(workers: [Worker]) -> [UInt8] {
        refresh(workers: workers)
        refreshEngineLoads(workers)
        return registry.emitToBuffer()
    }
}
