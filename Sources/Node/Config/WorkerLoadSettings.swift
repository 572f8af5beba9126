import Reliability

/// What the router learns from the workers' engines about their load, and what it does with
/// it: `--load-monitor-interval`, `--disable-load-monitoring` and worker overload protection
/// (`--worker-overload-*`, on by default as in the reference gateway).
public struct WorkerLoadSettings: Sendable, Equatable {
    /// Seconds between polls of every worker's `GET /v1/loads`.
    public var monitorIntervalSecs: Int
    /// `--disable-load-monitoring`: poll only when a decision reads the reports (overload
    /// protection, `power_of_two`); by default every worker is polled from registration on.
    public var pollOnlyWhenNeeded: Bool
    /// nil: overload protection is off (`--disable-worker-overload-protection`).
    public var overload: OverloadThresholds?
    /// `--worker-overload-shed`: 503 instead of the least loaded overloaded worker.
    public var shed: Bool
    /// `--worker-wedge-secs` and `--worker-stall-secs` (`Liveness`).
    public var liveness: Liveness.Rule

    /// How long a report counts: three polls. A worker whose load endpoint stops answering is
    /// judged by its report no longer than that, so a stale report keeps no worker out for good.
    public var reportLifetimeMs: UInt64 { UInt64(monitorIntervalSecs) * 3_000 }

    /// The `Retry-After` of a shed request: the next poll may see the queue gone.
    public var retryAfterSecs: Int { monitorIntervalSecs }

    public init(monitorIntervalSecs: Int = 10, pollOnlyWhenNeeded: Bool = false, overload: OverloadThresholds? = OverloadThresholds(), shed: Bool = false,
                liveness: Liveness.Rule = Liveness.Rule()) {
        self.liveness = liveness
        self.monitorIntervalSecs = monitorIntervalSecs
        self.pollOnlyWhenNeeded = pollOnlyWhenNeeded
        self.overload = overload
        self.shed = shed
    }

    init(_ f: ResolvedFlags) throws(ConfigError) {
        monitorIntervalSecs = try RouterConfig.positive(f, "load-monitor-interval")
        guard monitorIntervalSecs <= 3_600 else { throw ConfigError("--load-monitor-interval \(monitorIntervalSecs): at most 3600") }
        pollOnlyWhenNeeded = f.bool("disable-load-monitoring")
        let waiting = f.intWithDefault("worker-overload-waiting-requests")
        guard waiting >= 1 else {
            throw ConfigError("--worker-overload-waiting-requests \(waiting): must be 1 or more (the comparison is inclusive: 0 would leave every worker out)")
        }
        let usage = f.doubleWithDefault("worker-overload-token-usage")
        guard usage.isFinite, usage > 0, usage <= 1 else {
            throw ConfigError("--worker-overload-token-usage \(usage): must be above 0.0 and at most 1.0 (the comparison is inclusive: 0 would leave every worker out)")
        }
        if f.bool("disable-worker-overload-protection") {
            if f.bool("worker-overload-protection") {
                throw ConfigError("--worker-overload-protection and --disable-worker-overload-protection contradict each other: give one")
            }
            if f.bool("worker-overload-shed") {
                throw ConfigError("--worker-overload-shed needs worker overload protection, which --disable-worker-overload-protection switches off")
            }
            overload = nil
        } else {
            overload = OverloadThresholds(waitingRequests: waiting, tokenUsage: usage)
        }
        shed = f.bool("worker-overload-shed")
        func seconds(_ name: String) throws(ConfigError) -> UInt64 {
            let v = try RouterConfig.nonNegative(f, name)
            guard v <= 3_600 else { throw ConfigError("--\(name) \(v): at most 3600") }
            return UInt64(v) * 1000
        }
        liveness = Liveness.Rule(wedgeMs: try seconds("worker-wedge-secs"), stallMs: try seconds("worker-stall-secs"))
        // Judges only workers that push load records over a KV-event stream, which smg does not
        // subscribe to: accepted and checked, so command lines written for the reference run.
        _ = try seconds("worker-stale-secs")
    }
}
