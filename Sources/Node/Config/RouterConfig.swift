import Foundation
import Policies
import Reliability

/// The typed configuration the router node runs with, built from `ResolvedFlags` and
/// validated: every error names the flag it is about.
public struct RouterConfig: Sendable {
    public var host: String
    public var port: Int
    public var workerURLs: [String]
    public var policy: PolicyName
    public var policyConfig: PolicyConfig
    public var evictionIntervalSecs: Int
    public var requestTimeoutSecs: Int
    /// `--upstream-pool-idle-timeout-secs`: 0 keeps idle worker connections.
    public var upstreamPoolIdleTimeoutSecs: Int
    /// `--upstream-http2`: workers that answer HTTP/2 when registered (h2c by prior knowledge,
    /// ALPN over TLS) are called over one multiplexed connection per router loop.
    public var upstreamHTTP2 = false
    /// `--sse-keepalive-secs`: a relayed event stream the worker left silent this long carries a
    /// comment; 0 sends none.
    public var sseKeepaliveSecs = 15
    public var shutdownGracePeriodSecs: Int
    /// `--takeover-socket`: where this router takes over from a running one and listens for
    /// its own successor (`Upgrade/`); nil: no in-place upgrades.
    public var takeoverSocket: String?
    public var maxPayloadSize: Int
    /// `--max-batch-size`: the most requests one body may stand for (`n`, batch lists); more is
    /// refused before planning, so no client can make the router or a worker multiply its work.
    public var maxBatchSize: Int
    /// `--max-responses-payload-size`: the Responses and Conversations APIs parse their bodies
    /// into trees in the router, so they take less than what is only forwarded.
    public var maxResponsesPayloadSize: Int
    /// Client timeouts and the connection limit.
    public var clients: ClientLimits
    public var corsAllowedOrigins: [String]
    public var requestIDHeaders: [String]
    public var prometheusHost: String
    public var prometheusPort: Int
    public var durationBuckets: [Double]
    /// `--log-level` / `RUST_LOG`: the default level and per-module levels.
    public var logLevels: LogLevels
    /// `--log-dir`: also write the log to daily files there (checked when the logger is made).
    public var logDir: String?
    public var logJSON: Bool
    public var retry: RetryConfig
    public var breaker: CircuitBreakerConfig
    public var health: HealthCheckConfig
    public var admission: AdmissionConfig
    /// Load polls of the workers' engines and worker overload protection.
    public var workerLoad = WorkerLoadSettings()
    public var startupTimeoutSecs: Int
    public var startupCheckIntervalSecs: Int
    /// Credentials: `--api-key`, control-plane keys, JWTs, audit logging.
    public var security: SecuritySettings
    /// HTTPS on the API port, TLS to workers.
    public var tls: TLSSettings
    /// Where conversations are kept.
    public enum History: Sendable, Equatable {
        case memory, none
        case redis(RedisURL, poolSize: Int, retentionDays: Int, durability: RedisClient.Durability, timeoutSecs: Int)
        case postgres(PostgresURL, poolSize: Int, timeoutSecs: Int, retentionDays: Int)

        /// `--history-backend`'s value.
        public var name: String {
            switch self {
            case .memory: "memory"
            case .none: "none"
            case .redis: "redis"
            case .postgres: "postgres"
            }
        }
    }
    public var history: History = .memory
    /// The memory backend's bounds (`--history-memory-*`).
    var historyMemory = HistoryLedger.Limits()
    /// `--history-max-item-bytes`: the most one stored item holds, in every backend, so no
    /// single item can take a replayed chain's whole byte budget or a store's memory.
    var historyMaxItemBytes = 4 << 20
    /// Where `manual`'s routing-key assignments are also kept (`--session-store`).
    public enum SessionStore: Sendable, Equatable {
        case memory
        case redis(RedisURL, poolSize: Int)
    }
    public var sessionStore: SessionStore = .memory
    /// `--api-key`: required from clients on inference routes, and sent to workers.
    public var apiKey: String? { security.apiKey }
    /// Set with --enable-mesh.
    public var mesh: MeshSettings?
    /// Set with --enable-trace.
    public var tracing: TracingSettings?
    /// What this router is called where routers are told apart (the dashboard, traces): its
    /// mesh name, else its API address.
    public var instanceName: String { mesh?.name ?? "\(host):\(port)" }
    /// Set with --pd-disaggregation.
    public var pd: PDSettings?

    /// The workers a router starts with, from `--worker-urls`, `--prefill` and `--decode`.
    var startupWorkers: [(url: String, role: WorkerRole, bootstrapPort: Int?)] {
        workerURLs.map { ($0, .regular, nil) }
            + (pd?.prefills.map { ($0.url, .prefill, $0.bootstrapPort) } ?? [])
            + (pd?.decodes.map { ($0, .decode, nil) } ?? [])
    }
    /// `--enable-igw`: several models, each with its own policy (a worker's `policy` label).
    /// `--discovery-provider file`: the manifest and how often it is read again.
    public var fileDiscovery: FileDiscoverySettings?
    public struct FileDiscoverySettings: Sendable, Equatable {
        public var path: String
        public var intervalSecs: Int
    }
    /// `--service-discovery` / `--discovery-provider kubernetes`.
    public var kubernetes: KubernetesSettings?
    public var igw: Bool
    /// `--dp-aware`: route to data-parallel ranks (`data_parallel_rank`), learned from workers' `dp_size`.
    public var dpAware: Bool
    public var flags: ResolvedFlags

    public static let defaultDurationBuckets: [Double] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]

    public init(_ f: ResolvedFlags) throws(ConfigError) {
        flags = f
        // Refuse any explicitly given flag whose feature this build does not have.
        for spec in FlagTable.all where f.isExplicit(spec.name) {
            if case .notBuilt(let owner) = spec.status {
                throw ConfigError("--\(spec.name) is not built yet in this smg (\(owner)); remove it to start (given by \(f.source(spec.name)))")
            }
        }
        host = f.stringWithDefault("host")
        port = try Self.port(f, "port")
        workerURLs = try f.list("worker-urls").map { url throws(ConfigError) in try WorkerURL.validate(url, flag: "--worker-urls") }

        let policyName = f.stringWithDefault("policy")
        guard let name = PolicyName(rawValue: policyName) else {
            throw ConfigError("--policy \(policyName): unknown policy; expected one of \(PolicyName.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        policy = name
        policyConfig = try Self.policyConfig(f)
        pd = try PDSettings.parse(f, policy: name)
        fileDiscovery = try Self.fileDiscovery(f)
        igw = f.bool("enable-igw")
        dpAware = f.bool("dp-aware")
        evictionIntervalSecs = try Self.positive(f, "eviction-interval")

        requestTimeoutSecs = try Self.positive(f, "request-timeout-secs")
        upstreamPoolIdleTimeoutSecs = try Self.nonNegative(f, "upstream-pool-idle-timeout-secs")
        guard upstreamPoolIdleTimeoutSecs <= 86_400 else { throw ConfigError("--upstream-pool-idle-timeout-secs \(upstreamPoolIdleTimeoutSecs): at most 86400") }
        upstreamHTTP2 = f.bool("upstream-http2")
        sseKeepaliveSecs = try Self.nonNegative(f, "sse-keepalive-secs")
        guard sseKeepaliveSecs <= 3_600 else { throw ConfigError("--sse-keepalive-secs \(sseKeepaliveSecs): at most 3600") }
        shutdownGracePeriodSecs = try Self.nonNegative(f, "shutdown-grace-period-secs")
        takeoverSocket = f.string("takeover-socket").flatMap { $0.isEmpty ? nil : $0 }
        if let path = takeoverSocket, path.utf8.count > 107 {
            throw ConfigError("--takeover-socket: a Unix socket path is at most 107 bytes (got \(path.utf8.count))")
        }
        maxPayloadSize = try Self.positive(f, "max-payload-size")
        maxBatchSize = try Self.positive(f, "max-batch-size")
        maxResponsesPayloadSize = try Self.positive(f, "max-responses-payload-size")
        clients = try ClientLimits(f)
        corsAllowedOrigins = f.list("cors-allowed-origins")
        requestIDHeaders = f.list("request-id-headers").map { $0.lowercased() }
        prometheusHost = f.stringWithDefault("prometheus-host")
        prometheusPort = try Self.port(f, "prometheus-port")
        let buckets = try f.list("prometheus-duration-buckets").map { s throws(ConfigError) -> Double in
            guard let d = Double(s), d > 0, d.isFinite else { throw ConfigError("--prometheus-duration-buckets: '\(s)' is not a positive number") }
            return d
        }
        durationBuckets = buckets.isEmpty ? Self.defaultDurationBuckets : buckets.sorted()
        do throws(LogLevels.Invalid) {
            // RUST_LOG is often written for the reference gateway, naming crates smg does not have.
            logLevels = try LogLevels.parse(f.stringWithDefault("log-level"), foreignTargetsAllowed: f.source("log-level") == .environment)
        } catch {
            throw ConfigError("--log-level: \(error.message)")
        }
        logDir = f.string("log-dir").flatMap { $0.isEmpty ? nil : $0 }
        logJSON = f.bool("log-json")
        retry = try Self.retryConfig(f)
        breaker = try Self.breakerConfig(f)
        health = try Self.healthConfig(f)
        admission = try Self.admissionConfig(f)
        workerLoad = try WorkerLoadSettings(f)
        startupTimeoutSecs = try Self.positive(f, "worker-startup-timeout-secs")
        startupCheckIntervalSecs = try Self.positive(f, "worker-startup-check-interval")
        security = try SecuritySettings(f)
        tls = try TLSSettings(f)
        mesh = f.bool("enable-mesh") ? try MeshSettings(f) : nil
        kubernetes = try KubernetesSettings.parse(f, pd: pd != nil, mesh: mesh != nil)
        tracing = f.bool("enable-trace") ? try TracingSettings(f) : nil
        // An unsealed mesh applies fleet changes from packets anyone can forge: with credentials
        // configured it would be the way around them, so it is refused unless asked for by name.
        if let mesh, mesh.keyring == nil, !security.isOpen, !f.bool("mesh-allow-unsealed") {
            throw ConfigError("--enable-mesh without a cluster key while credentials are configured: one unsealed packet to the mesh port could add a worker that receives your users' prompts and keys. Create a key with 'smg mesh-keygen > mesh.key' and pass --mesh-key-file mesh.key (or SMG_MESH_KEY) on every router, or pass --mesh-allow-unsealed to accept the risk")
        }
        // With peers to tell, cache_aware keeps the log its summaries are made from.
        policyConfig.sharesState = mesh != nil
        let backend = f.stringWithDefault("backend")
        switch backend {
        case "sglang", "vllm": break
        case "trtllm", "openai", "anthropic": throw ConfigError("--backend \(backend) is not built yet in this smg; use sglang or vllm")
        default: throw ConfigError("--backend \(backend): expected sglang, vllm, trtllm, openai or anthropic")
        }
        let historyBackend = f.stringWithDefault("history-backend")
        historyMaxItemBytes = try Self.positive(f, "history-max-item-bytes")
        switch historyBackend {
        case "memory":
            history = .memory
            historyMemory.responses = try Self.positive(f, "history-memory-max-responses")
            historyMemory.items = try Self.positive(f, "history-memory-max-items")
            historyMemory.bytes = try Self.positive(f, "history-memory-max-bytes")
            historyMemory.retentionMs = UInt64(try Self.nonNegative(f, "history-memory-retention-secs")) * 1000
        case "none": history = .none
        case "redis":
            guard let raw = f.string("redis-url"), !raw.isEmpty else { throw ConfigError("--history-backend redis needs --redis-url redis://host:port") }
            let retention = f.intWithDefault("redis-retention-days")
            guard retention == -1 || retention >= 1 else { throw ConfigError("--redis-retention-days \(retention): 1 or more, or -1 to keep forever") }
            let timeout = try Self.positive(f, "redis-op-timeout-secs")
            guard timeout <= 600 else { throw ConfigError("--redis-op-timeout-secs \(timeout): at most 600") }
            history = .redis(try RedisURL(parsing: raw), poolSize: try Self.positive(f, "redis-pool-max-size"), retentionDays: retention,
                             durability: try Self.redisDurability(f), timeoutSecs: timeout)
        case "postgres":
            guard let raw = f.string("postgres-db-url"), !raw.isEmpty else {
                throw ConfigError("--history-backend postgres needs --postgres-db-url postgres://user@host:port/database")
            }
            let timeout = try Self.positive(f, "postgres-op-timeout-secs")
            guard timeout <= 600 else { throw ConfigError("--postgres-op-timeout-secs \(timeout): at most 600") }
            let retention = f.intWithDefault("postgres-retention-days")
            guard retention == -1 || (1...36_500).contains(retention) else {
                throw ConfigError("--postgres-retention-days \(retention): 1 to 36500, or -1 to keep forever")
            }
            history = .postgres(try PostgresURL(parsing: raw), poolSize: try Self.positive(f, "postgres-pool-max-size"), timeoutSecs: timeout,
                                retentionDays: retention)
        case "oracle":
            throw ConfigError("--history-backend oracle is not built yet in this smg (history storage); use memory, none, redis or postgres")
        default: throw ConfigError("--history-backend \(historyBackend): expected memory, none, oracle, postgres or redis")
        }
        switch f.stringWithDefault("session-store") {
        case "memory": sessionStore = .memory
        case "redis":
            guard let raw = f.string("redis-url"), !raw.isEmpty else { throw ConfigError("--session-store redis needs --redis-url redis://host:port") }
            sessionStore = .redis(try RedisURL(parsing: raw), poolSize: try Self.positive(f, "redis-pool-max-size"))
        case let other: throw ConfigError("--session-store \(other): expected memory or redis")
        }
    }

    /// Resolves and validates in one step.
    public static func load(arguments: [String], environment: [String: String]) throws(ConfigError) -> RouterConfig {
        try RouterConfig(ConfigLoader.resolve(arguments: arguments, environment: environment))
    }

    static func policyConfig(_ f: ResolvedFlags) throws(ConfigError) -> PolicyConfig {
        var p = PolicyConfig()
        let threshold = f.doubleWithDefault("cache-threshold")
        guard (0...1).contains(threshold) else { throw ConfigError("--cache-threshold \(threshold): must be between 0.0 and 1.0") }
        p.cacheAware.cacheThreshold = threshold
        p.cacheAware.balanceAbsThreshold = try nonNegative(f, "balance-abs-threshold")
        let rel = f.doubleWithDefault("balance-rel-threshold")
        guard rel >= 1 else { throw ConfigError("--balance-rel-threshold \(rel): must be 1.0 or more") }
        p.cacheAware.balanceRelThreshold = rel
        p.cacheAware.maxTreeSize = try positive(f, "max-tree-size")
        for name in ["balance-token-usage-threshold", "overload-token-usage-threshold"] {
            let v = f.doubleWithDefault(name)
            guard v.isFinite, v > 0 else { throw ConfigError("--\(name) \(v): must be a finite number above 0.0 (1.0 or more switches it off)") }
        }
        let warmupSecs = try nonNegative(f, "worker-warmup-secs")
        guard warmupSecs <= 86_400 else { throw ConfigError("--worker-warmup-secs \(warmupSecs): at most 86400") }
        p.cacheAware.warmup.durationMs = UInt64(warmupSecs) * 1000
        for name in ["worker-warmup-share", "worker-warmup-thin-ratio"] {
            let v = f.doubleWithDefault(name)
            guard v.isFinite, (0...1).contains(v) else { throw ConfigError("--\(name) \(v): must be a finite number from 0.0 to 1.0") }
        }
        p.cacheAware.warmup.share = f.doubleWithDefault("worker-warmup-share")
        p.cacheAware.warmup.thinRatio = f.doubleWithDefault("worker-warmup-thin-ratio")
        p.cacheAware.warmup.blocks = try positive(f, "worker-warmup-blocks")
        p.cacheAware.warmup.divertEvery = try nonNegative(f, "worker-warmup-divert-every")
        p.cacheAware.balanceTokenUsageThreshold = f.doubleWithDefault("balance-token-usage-threshold")
        p.cacheAware.overloadTokenUsageThreshold = f.doubleWithDefault("overload-token-usage-threshold")
        let weight = f.doubleWithDefault("least-load-kv-pressure-weight")
        guard weight.isFinite, weight >= 0 else { throw ConfigError("--least-load-kv-pressure-weight \(weight): must be a finite number of seconds, 0 or more") }
        p.leastLoad.kvPressureWeight = weight
        let throughput = f.doubleWithDefault("least-load-default-throughput")
        guard throughput.isFinite, throughput > 0 else { throw ConfigError("--least-load-default-throughput \(throughput): must be a finite number of tokens per second above 0") }
        p.leastLoad.defaultThroughput = throughput
        p.leastLoad.meanPrefillTokens = try positive(f, "least-load-mean-prefill-tokens")
        p.leastLoad.maxWaitingRequests = try nonNegative(f, "least-load-max-waiting-requests")
        let metric = f.stringWithDefault("power-of-two-load-metric")
        guard let m = PowerOfTwoMetric(rawValue: metric) else {
            throw ConfigError("--power-of-two-load-metric \(metric.prefix(64)): expected expected_wait, requests or least_requests")
        }
        p.powerOfTwoMetric = m
        p.prefixTokenCount = try positive(f, "prefix-token-count")
        let factor = f.doubleWithDefault("prefix-hash-load-factor")
        guard factor >= 1 else { throw ConfigError("--prefix-hash-load-factor \(factor): must be 1.0 or more") }
        p.prefixHashLoadFactor = factor
        p.maxIdleSecs = UInt64(try positive(f, "max-idle-secs"))
        let mode = f.stringWithDefault("assignment-mode")
        guard let m = AssignmentMode(rawValue: mode) else {
            throw ConfigError("--assignment-mode \(mode): expected random, min_load or min_group")
        }
        p.assignmentMode = m
        return p
    }

    static func retryConfig(_ f: ResolvedFlags) throws(ConfigError) -> RetryConfig {
        var r = RetryConfig()
        r.maxRetries = try nonNegative(f, "retry-max-retries")
        r.initialBackoffMs = try nonNegative(f, "retry-initial-backoff-ms")
        r.maxBackoffMs = try nonNegative(f, "retry-max-backoff-ms")
        guard r.maxBackoffMs >= r.initialBackoffMs else { throw ConfigError("--retry-max-backoff-ms \(r.maxBackoffMs): must not be below --retry-initial-backoff-ms (\(r.initialBackoffMs))") }
        r.multiplier = f.doubleWithDefault("retry-backoff-multiplier")
        guard r.multiplier >= 1 else { throw ConfigError("--retry-backoff-multiplier \(r.multiplier): must be 1.0 or more") }
        r.jitterFactor = f.doubleWithDefault("retry-jitter-factor")
        guard (0...1).contains(r.jitterFactor) else { throw ConfigError("--retry-jitter-factor \(r.jitterFactor): must be between 0.0 and 1.0") }
        r.enabled = !f.bool("disable-retries")
        return r
    }

    static func breakerConfig(_ f: ResolvedFlags) throws(ConfigError) -> CircuitBreakerConfig {
        var b = CircuitBreakerConfig()
        b.failureThreshold = try positive(f, "cb-failure-threshold")
        b.successThreshold = try positive(f, "cb-success-threshold")
        b.openDurationMs = UInt64(try positive(f, "cb-timeout-duration-secs")) * 1000
        b.windowMs = UInt64(try positive(f, "cb-window-duration-secs")) * 1000
        b.enabled = !f.bool("disable-circuit-breaker")
        return b
    }

    static func healthConfig(_ f: ResolvedFlags) throws(ConfigError) -> HealthCheckConfig {
        var h = HealthCheckConfig()
        h.failureThreshold = try positive(f, "health-failure-threshold")
        h.successThreshold = try positive(f, "health-success-threshold")
        h.timeoutMs = try positive(f, "health-check-timeout-secs") * 1000
        h.intervalMs = try positive(f, "health-check-interval-secs") * 1000
        let endpoint = f.stringWithDefault("health-check-endpoint")
        guard endpoint.hasPrefix("/"), !endpoint.contains(" ") else { throw ConfigError("--health-check-endpoint \(endpoint): must be a path starting with /") }
        h.endpoint = endpoint
        h.enabled = !f.bool("disable-health-check")
        return h
    }

    static func admissionConfig(_ f: ResolvedFlags) throws(ConfigError) -> AdmissionConfig {
        var a = AdmissionConfig()
        let cap = f.intWithDefault("max-concurrent-requests")
        guard cap == -1 || cap >= 1 else { throw ConfigError("--max-concurrent-requests \(cap): must be -1 (unlimited) or 1 and more") }
        a.maxConcurrent = cap == -1 ? nil : cap
        a.queueSize = try nonNegative(f, "queue-size")
        a.queueTimeoutMs = UInt64(try positive(f, "queue-timeout-secs")) * 1000
        // A request rate limit only when asked for: the reference's default (the concurrency cap
        // as a rate) would silently turn "at most 200 at once" into "at most 200 per second".
        if let rate = f.int("rate-limit-tokens-per-second") {
            guard rate >= 1 else { throw ConfigError("--rate-limit-tokens-per-second \(rate): must be 1 or more") }
            a.tokensPerSecond = Double(rate)
        }
        return a
    }

    static func port(_ f: ResolvedFlags, _ name: String) throws(ConfigError) -> Int {
        let v = f.int(name) ?? 0
        guard (0...65535).contains(v) else { throw ConfigError("--\(name) \(v): a port is 0 to 65535") }
        return v
    }

    /// `--redis-wait-replicas` and `--redis-wait-timeout-ms`.
    static func redisDurability(_ f: ResolvedFlags) throws(ConfigError) -> RedisClient.Durability {
        let raw = f.stringWithDefault("redis-wait-replicas")
        let replicas: RedisClient.Durability.Replicas
        if raw == "auto" {
            replicas = .auto
        } else if let n = Int(raw), (0...16).contains(n) {
            replicas = .count(n)
        } else {
            throw ConfigError("--redis-wait-replicas \(raw.prefix(40)): expected auto or 0 to 16")
        }
        let ms = f.intWithDefault("redis-wait-timeout-ms")
        guard (1...60_000).contains(ms) else { throw ConfigError("--redis-wait-timeout-ms \(ms): must be 1 to 60000") }
        return RedisClient.Durability(replicas: replicas, timeout: .milliseconds(Int64(ms)))
    }

    static func fileDiscovery(_ f: ResolvedFlags) throws(ConfigError) -> FileDiscoverySettings? {
        let file = f.string("discovery-file")
        switch f.string("discovery-provider") {
        case nil:
            guard file == nil else { throw ConfigError("--discovery-file needs --discovery-provider file") }
            return nil
        case "file":
            guard let file, !file.isEmpty else { throw ConfigError("--discovery-provider file needs --discovery-file PATH (a JSON manifest of workers)") }
            let interval = try positive(f, "discovery-check-interval-secs")
            guard interval <= 86_400 else { throw ConfigError("--discovery-check-interval-secs \(interval): at most 86400") }
            return FileDiscoverySettings(path: file, intervalSecs: interval)
        case "kubernetes":
            guard file == nil else { throw ConfigError("--discovery-file needs --discovery-provider file, not kubernetes") }
            return nil
        case let other?:
            throw ConfigError("--discovery-provider \(other.prefix(64)): expected file or kubernetes")
        }
    }

    static func positive(_ f: ResolvedFlags, _ name: String) throws(ConfigError) -> Int {
        let v = f.int(name) ?? 0
        guard v > 0 else { throw ConfigError("--\(name) \(v): must be greater than 0") }
        return v
    }

    static func nonNegative(_ f: ResolvedFlags, _ name: String) throws(ConfigError) -> Int {
        let v = f.int(name) ?? 0
        guard v >= 0 else { throw ConfigError("--\(name) \(v): must be 0 or more") }
        return v
    }
}
