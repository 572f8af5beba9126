import Prometheus
import Synchronization

/// The router's Prometheus metrics (`smg_http_*`, `smg_router_*`, `smg_worker_*`: the gateway's metric names).
///
/// Handles are created once per label set and cached, so the hot path does a dictionary
/// lookup and an atomic add per metric. Per-worker gauges are filled at scrape time from the
/// registry's atomics instead of being updated on every request.
public final class RouterMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let buckets: [Double]

    private struct Cache {
        var http: [HTTPKey: (Counter, ValueHistogram)] = [:]
        var responses: [Int: Counter] = [:]
        var routerRequests: [RoutedKey: Counter] = [:]
        var routerErrors: [ErrorKey: Counter] = [:]
        var workerRequests: [String: Counter] = [:]
        var selections: [SelectionKey: Counter] = [:]
        var decisions: [DecisionKey: Counter] = [:]
        var stateSizes: [String: Gauge] = [:]
        var named: [NamedKey: Counter] = [:]
        var breakerState: [String: Gauge] = [:]
        var namedGauges: [NamedKey: Gauge] = [:]
        var workerActive: [String: Gauge] = [:]
        var workerHealth: [String: Gauge] = [:]
        var historyDurations: [String: ValueHistogram] = [:]
        var pdPrefillDuration: ValueHistogram?
    }
    private let cache = Mutex(Cache())
    // Label sets as hashable keys, so a lookup builds no string.
    private struct HTTPKey: Hashable { let method: String, path: String }
    private struct RoutedKey: Hashable { let model: String, endpoint: String, streaming: Bool }
    private struct ErrorKey: Hashable { let endpoint: String, code: String }
    private struct SelectionKey: Hashable { let policy: String, model: String, worker: String }
    private struct DecisionKey: Hashable { let policy: String, model: String, reason: String }
    /// A counter by name and its label pairs, flattened.
    private struct NamedKey: Hashable { let name: String, labels: [String] }
    private let poolSize: Gauge
    private let healthyWorkers: Gauge
    private let activeRequests: Gauge
    private let upstreamConnects: Counter
    private let backoff: ValueHistogram
    private let queueDepth: Gauge
    private let admittedInFlight: Gauge

    public init(durationBuckets: [Double]) {
        buckets = durationBuckets
        poolSize = registry.makeGauge(descriptor: Self.descriptor("smg_worker_pool_size", "Workers registered with the router"))
        healthyWorkers = registry.makeGauge(descriptor: Self.descriptor("smg_worker_healthy_total", "Workers currently able to take requests"))
        activeRequests = registry.makeGauge(descriptor: Self.descriptor("smg_http_requests_active", "Requests the router is serving right now"))
        upstreamConnects = registry.makeCounter(descriptor: Self.descriptor("smg_worker_connections_opened_total", "New TCP connections opened to workers (pool misses)"))
        backoff = registry.makeValueHistogram(descriptor: Self.descriptor("smg_router_retry_backoff_seconds", "Delay before each retry"),
                                              buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30])
        queueDepth = registry.makeGauge(descriptor: Self.descriptor("smg_router_queue_depth", "Requests waiting for admission"))
        admittedInFlight = registry.makeGauge(descriptor: Self.descriptor("smg_router_admitted_active", "Admitted inference requests in flight (the --max-concurrent-requests count)"))
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

    /// One HTTP request finished (any route, any status).
    func httpRequest(method: String, path: String, status: Int, seconds: Double) {
        let (handles, response) = cache.withLock { c in
            (Self.cached(&c.http, HTTPKey(method: method, path: path)) {
                let labels = [("method", method), ("path", path)]
                return (registry.makeCounter(descriptor: Self.descriptor("smg_http_requests_total", "HTTP requests received"), labels: labels),
                        registry.makeValueHistogram(descriptor: Self.descriptor("smg_http_request_duration_seconds", "Time from request head to end of response"), labels: labels, buckets: buckets))
            },
            Self.cached(&c.responses, status) {
                registry.makeCounter(descriptor: Self.descriptor("smg_http_responses_total", "HTTP responses sent, by status code"), labels: [("status", String(status))])
            })
        }
        handles.0.increment()
        handles.1.record(seconds)
        response.increment()
    }

    /// An inference request was routed (before the worker answered), and why the policy chose.
    func routed(model: String, endpoint: String, streaming: Bool, worker: String, policy: String, reason: String) {
        let (r, w, sel, dec) = cache.withLock { c in
            (Self.cached(&c.routerRequests, RoutedKey(model: model, endpoint: endpoint, streaming: streaming)) {
                registry.makeCounter(descriptor: Self.descriptor("smg_router_requests_total", "Inference requests routed to a worker"), labels: [("model", model), ("endpoint", endpoint), ("streaming", String(streaming))])
            },
            Self.cached(&c.workerRequests, worker) {
                registry.makeCounter(descriptor: Self.descriptor("smg_worker_requests_total", "Requests sent to each worker"), labels: [("worker", worker)])
            },
            Self.cached(&c.selections, SelectionKey(policy: policy, model: model, worker: worker)) {
                registry.makeCounter(descriptor: Self.descriptor("smg_worker_selection_total", "Workers chosen by the routing policy"), labels: [("policy", policy), ("model", model), ("worker", worker)])
            },
            Self.cached(&c.decisions, DecisionKey(policy: policy, model: model, reason: reason)) {
                registry.makeCounter(descriptor: Self.descriptor("smg_policy_decisions_total", "Routing decisions by branch (cache_hit, cache_miss, imbalance, sticky, ...)"), labels: [("policy", policy), ("model", model), ("reason", reason)])
            })
        }
        r.increment()
        w.increment()
        sel.increment()
        dec.increment()
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

    /// An inference request ended in an error the router produced.
    func routerError(endpoint: String, code: APIError.Code) { routerError(endpoint: endpoint, code: code.rawValue) }

    func routerError(endpoint: String, code: String) {
        cache.withLock { c in
            Self.cached(&c.routerErrors, ErrorKey(endpoint: endpoint, code: code)) {
                registry.makeCounter(descriptor: Self.descriptor("smg_router_request_errors_total", "Inference requests that ended in a router error"), labels: [("endpoint", endpoint), ("error", code)])
            }
        }.increment()
    }

    func upstreamConnectionOpened() { upstreamConnects.increment() }

    /// Client connections the router closed or turned away: header_timeout, body_timeout,
    /// idle_timeout, max_connections.
    func connectionRefused(reason: String) {
        count("smg_http_connections_refused_total", "Client connections closed or refused by the router's limits", [("reason", reason)])
    }

    private func count(_ name: String, _ help: String, _ labels: [(String, String)]) {
        cache.withLock { c in
            Self.cached(&c.named, NamedKey(name: name, labels: labels.flatMap { [$0.0, $0.1] })) {
                registry.makeCounter(descriptor: Self.descriptor(name, help), labels: labels)
            }
        }.increment()
    }

    /// Admission outcomes: admitted, queued, admitted_from_queue, rejected_queue_full, rejected_queue_timeout.
    func admission(_ result: String) {
        count("smg_router_admission_total", "Admission decisions by result", [("result", result)])
    }

    /// A retry is about to be made after `delayMs`, after `worker` failed.
    func retry(endpoint: String, worker: String, delayMs: Int) {
        count("smg_router_retries_total", "Retries of inference requests", [("endpoint", endpoint)])
        count("smg_worker_retries_total", "Retries caused by each worker's failures", [("worker", worker)])
        backoff.record(Double(delayMs) / 1000)
    }

    /// One history operation (Conversations API): its result (`ok`, `not_found`, `invalid`,
    /// `unavailable`, `error`) and how long the store took.
    /// A read of the `--discovery-file` manifest: `ok`, `invalid`, `missing` or `unreadable`.
    func discoveryRead(_ result: String) {
        count("smg_discovery_manifest_reads_total", "Reads of the discovery manifest by result", [("result", result)])
    }

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

    func retriesExhausted(endpoint: String) {
        count("smg_router_retries_exhausted_total", "Requests that failed after using every retry", [("endpoint", endpoint)])
    }

    func breakerTransition(worker: String, to state: String) {
        count("smg_worker_cb_transitions_total", "Circuit breaker transitions by target state", [("worker", worker), ("to", state)])
    }

    func healthCheck(worker: String, ok: Bool) {
        count("smg_worker_health_checks_total", "Health checks by result", [("worker", worker), ("result", ok ? "ok" : "failed")])
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

    /// Sets a gauge by name and labels, created on first use: for values read at scrape time
    /// from another part of the router (the mesh's counters).
    func setGauge(_ name: String, _ help: String, _ labels: [(String, String)] = [], to value: Double) {
        cache.withLock { c in
            Self.cached(&c.namedGauges, NamedKey(name: name, labels: labels.flatMap { [$0.0, $0.1] })) {
                registry.makeGauge(descriptor: Self.descriptor(name, help), labels: labels)
            }.set(to: value)
        }
    }

    func admissionGauges(inFlight: Int, queued: Int) {
        admittedInFlight.set(to: Double(inFlight))
        queueDepth.set(to: Double(queued))
    }
    func requestStarted() { activeRequests.increment() }
    func requestEnded() { activeRequests.decrement() }

    /// Refreshes worker gauges from the registry; called right before each scrape.
    func refresh(workers: [Worker]) {
        poolSize.set(to: Double(workers.count))
        healthyWorkers.set(to: Double(workers.filter(\.isAvailable).count))
        // Per role only when there are prefill or decode workers (PD mode), so a regular fleet
        // exports no extra series.
        if workers.contains(where: { $0.role != .regular }) {
            for role in WorkerRole.allCases {
                let of = workers.filter { $0.role == role }
                setGauge("smg_workers_by_type", "Workers by type (regular, prefill, decode) and state", [("type", role.rawValue), ("state", "registered")], to: Double(of.count))
                setGauge("smg_workers_by_type", "Workers by type (regular, prefill, decode) and state", [("type", role.rawValue), ("state", "available")], to: Double(of.filter(\.isAvailable).count))
            }
        }
        cache.withLock { c in
            let live = Set(workers.map(\.url.canonical))
            for (url, gauge) in c.workerActive where !live.contains(url) {
                registry.unregisterGauge(gauge)
                c.workerActive[url] = nil
            }
            for (url, gauge) in c.breakerState where !live.contains(url) {
                registry.unregisterGauge(gauge)
                c.breakerState[url] = nil
            }
            for (url, gauge) in c.workerHealth where !live.contains(url) {
                registry.unregisterGauge(gauge)
                c.workerHealth[url] = nil
            }
            // Counters labelled with a worker go with it, so removed workers leave no series.
            for (url, counter) in c.workerRequests where !live.contains(url) {
                registry.unregisterCounter(counter)
                c.workerRequests[url] = nil
            }
            for (key, counter) in c.selections where !live.contains(key.worker) {
                registry.unregisterCounter(counter)
                c.selections[key] = nil
            }
            for (key, counter) in c.named {
                guard let i = key.labels.firstIndex(of: "worker"), i % 2 == 0, i + 1 < key.labels.count, !live.contains(key.labels[i + 1]) else { continue }
                registry.unregisterCounter(counter)
                c.named[key] = nil
            }
            for w in workers {
                let url = w.url.canonical
                Self.cached(&c.workerActive, url) {
                    registry.makeGauge(descriptor: Self.descriptor("smg_worker_requests_active", "Requests in flight to each worker"), labels: [("worker", url)])
                }.set(to: Double(w.inFlight))
                Self.cached(&c.breakerState, url) {
                    registry.makeGauge(descriptor: Self.descriptor("smg_worker_cb_state", "Circuit breaker state: 0 closed, 1 open, 2 half-open"), labels: [("worker", url)])
                }.set(to: w.breakerState == .closed ? 0 : (w.breakerState == .open ? 1 : 2))
                Self.cached(&c.workerHealth, url) {
                    registry.makeGauge(descriptor: Self.descriptor("smg_worker_health", "1 when the worker may take requests, 0 otherwise"), labels: [("worker", url)])
                }.set(to: w.isAvailable ? 1.0 : 0.0)
            }
        }
    }

    public func render(workers: [Worker]) -> [UInt8] {
        refresh(workers: workers)
        return registry.emitToBuffer()
    }
}
