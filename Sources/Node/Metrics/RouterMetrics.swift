import Prometheus
import Synchronization

/// The router's Prometheus metrics (`smg_http_*`, `smg_router_*`, `smg_worker_*`, compat.md).
///
/// Handles are created once per label set and cached, so the hot path does a dictionary
/// lookup and an atomic add per metric. Per-worker gauges are filled at scrape time from the
/// registry's atomics instead of being updated on every request.
public final class RouterMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let buckets: [Double]

    private struct Cache {
        var httpRequests: [String: Counter] = [:]
        var httpDurations: [String: ValueHistogram] = [:]
        var responses: [Int: Counter] = [:]
        var routerRequests: [String: Counter] = [:]
        var routerErrors: [String: Counter] = [:]
        var workerRequests: [String: Counter] = [:]
        var workerActive: [String: Gauge] = [:]
        var workerHealth: [String: Gauge] = [:]
    }
    private let cache = Mutex(Cache())
    private let poolSize: Gauge
    private let healthyWorkers: Gauge
    private let activeRequests: Gauge
    private let upstreamConnects: Counter

    public init(durationBuckets: [Double]) {
        buckets = durationBuckets
        poolSize = registry.makeGauge(descriptor: Self.descriptor("smg_worker_pool_size", "Workers registered with the router"))
        healthyWorkers = registry.makeGauge(descriptor: Self.descriptor("smg_worker_healthy_total", "Workers currently able to take requests"))
        activeRequests = registry.makeGauge(descriptor: Self.descriptor("smg_http_requests_active", "Requests the router is serving right now"))
        upstreamConnects = registry.makeCounter(descriptor: Self.descriptor("smg_worker_connections_opened_total", "New TCP connections opened to workers (pool misses)"))
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
        let key = method + " " + path
        let (count, duration, response) = cache.withLock { c in
            (Self.cached(&c.httpRequests, key) {
                registry.makeCounter(descriptor: Self.descriptor("smg_http_requests_total", "HTTP requests received"), labels: [("method", method), ("path", path)])
            },
            Self.cached(&c.httpDurations, key) {
                registry.makeValueHistogram(descriptor: Self.descriptor("smg_http_request_duration_seconds", "Time from request head to end of response"), labels: [("method", method), ("path", path)], buckets: buckets)
            },
            Self.cached(&c.responses, status) {
                registry.makeCounter(descriptor: Self.descriptor("smg_http_responses_total", "HTTP responses sent, by status code"), labels: [("status", String(status))])
            })
        }
        count.increment()
        duration.record(seconds)
        response.increment()
    }

    /// An inference request was routed (before the worker answered).
    func routed(model: String, endpoint: String, streaming: Bool, worker: String) {
        let key = model + "\u{0}" + endpoint + (streaming ? "\u{0}1" : "\u{0}0")
        let (r, w) = cache.withLock { c in
            (Self.cached(&c.routerRequests, key) {
                registry.makeCounter(descriptor: Self.descriptor("smg_router_requests_total", "Inference requests routed to a worker"), labels: [("model", model), ("endpoint", endpoint), ("streaming", String(streaming))])
            },
            Self.cached(&c.workerRequests, worker) {
                registry.makeCounter(descriptor: Self.descriptor("smg_worker_requests_total", "Requests sent to each worker"), labels: [("worker", worker)])
            })
        }
        r.increment()
        w.increment()
    }

    /// An inference request ended in an error the router produced.
    func routerError(endpoint: String, code: String) {
        let key = endpoint + "\u{0}" + code
        cache.withLock { c in
            Self.cached(&c.routerErrors, key) {
                registry.makeCounter(descriptor: Self.descriptor("smg_router_request_errors_total", "Inference requests that ended in a router error"), labels: [("endpoint", endpoint), ("error", code)])
            }
        }.increment()
    }

    func upstreamConnectionOpened() { upstreamConnects.increment() }
    func requestStarted() { activeRequests.increment() }
    func requestEnded() { activeRequests.decrement() }

    /// Refreshes worker gauges from the registry; called right before each scrape.
    func refresh(workers: [Worker]) {
        poolSize.set(to: Double(workers.count))
        healthyWorkers.set(to: Double(workers.filter(\.isAvailable).count))
        cache.withLock { c in
            let live = Set(workers.map(\.url.canonical))
            for (url, gauge) in c.workerActive where !live.contains(url) {
                registry.unregisterGauge(gauge)
                c.workerActive[url] = nil
            }
            for (url, gauge) in c.workerHealth where !live.contains(url) {
                registry.unregisterGauge(gauge)
                c.workerHealth[url] = nil
            }
            for w in workers {
                let url = w.url.canonical
                Self.cached(&c.workerActive, url) {
                    registry.makeGauge(descriptor: Self.descriptor("smg_worker_requests_active", "Requests in flight to each worker"), labels: [("worker", url)])
                }.set(to: Double(w.inFlight))
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
