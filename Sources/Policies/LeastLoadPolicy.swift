/// The knobs of `least_load` and of `power_of_two`'s `expected_wait` (the reference gateway's
/// flags and defaults).
public struct LeastLoadConfig: Sendable, Equatable {
    /// Seconds of wait a full KV cache adds (`--least-load-kv-pressure-weight`): a worker near
    /// its cache's end preempts or queues what comes.
    public var kvPressureWeight = 0.15
    /// Generated tokens per second assumed for a worker that reports none (`--least-load-default-throughput`).
    public var defaultThroughput = 2000.0
    /// Tokens one request stands for, as the router knows no token counts (`--least-load-mean-prefill-tokens`).
    public var meanPrefillTokens = 1024
    /// Skip a worker whose queue (reported waiting plus what was sent since the report) reached
    /// this, while another has not (`--least-load-max-waiting-requests`; 0: no cap).
    public var maxWaitingRequests = 0
    public init() {}
}

/// What `power_of_two` compares between its two picks (`--power-of-two-load-metric`).
public enum PowerOfTwoMetric: String, Sendable, CaseIterable {
    /// `LeastLoadPolicy.expectedWait`.
    case expected_wait
    /// The worker's own report of its requests (running and waiting), else the router's count.
    case requests
    /// The requests the routers have in flight to it, whatever it reports.
    case least_requests
}

/// `least_load`: the worker where a new request would wait least, by what the engines report.
///
/// The expected wait of a worker is the work ahead of a new request over the worker's speed,
/// plus a penalty for a filling KV cache:
///
///     (running + waiting + sent since the report) × mean prefill tokens / throughput
///       + KV pressure weight × KV usage
///
/// with running plus waiting as the worker reports them (`/v1/loads`, or the load of
/// `/get_load`), else the requests the routers have in flight to it; throughput (the summed
/// generation throughput of its ranks) and KV usage from a fresh `/v1/loads` report, else
/// `defaultThroughput` and none. The requests the router sent since the report count as
/// waiting, so a burst between two polls does not all land on one worker. With no reports at
/// all the policy is least-in-flight.
public struct LeastLoadPolicy: LoadBalancingPolicy {
    public let name = "least_load"
    public let config: LeastLoadConfig
    public init(_ config: LeastLoadConfig = LeastLoadConfig()) { self.config = config }

    /// Seconds a new request would wait on `w` (see the type's description).
    public static func expectedWait(_ w: WorkerCandidate, _ config: LeastLoadConfig) -> Double {
        let ahead = w.load + w.sentSinceReport
        let throughput = w.throughput.flatMap { $0 > 0 ? $0 : nil } ?? config.defaultThroughput
        let wait = Double(ahead) * Double(config.meanPrefillTokens) / max(throughput, 1)
        return wait + config.kvPressureWeight * (w.tokenUsage ?? 0)
    }

    /// The queue `maxWaitingRequests` caps: reported waiting plus sent since (nil: no report).
    static func queue(_ w: WorkerCandidate) -> Int? { w.reportedWaiting.map { $0 + w.sentSinceReport } }

    public mutating func select<R: RandomNumberGenerator>(
        _ request: RoutingRequest, from workers: [WorkerCandidate], using rng: inout R
    ) -> Selection? {
        var available = workers.indices.filter { workers[$0].isAvailable }
        if config.maxWaitingRequests > 0 {
            let short = available.filter { (Self.queue(workers[$0]) ?? 0) < config.maxWaitingRequests }
            if !short.isEmpty { available = short }
        }
        let waits = available.map { Self.expectedWait(workers[$0], config) }
        guard let best = waits.indices.min(by: { (waits[$0], workers[available[$0]].inFlight) < (waits[$1], workers[available[$1]].inFlight) }) else {
            return nil
        }
        return Selection(available[best], .expectedWait)
    }
}
