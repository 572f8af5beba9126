/// How long a client may take and how many may be connected (`--header-read-timeout-secs`,
/// `--body-idle-timeout-secs`, `--keep-alive-timeout-secs`, `--max-client-connections`). Slow
/// clients are what would otherwise hold a router's sockets and memory forever: a head sent one
/// byte at a time, a body that stops, a keep-alive connection never used again.
public struct ClientLimits: Sendable {
    /// From the first byte of a request to the end of its head.
    public var headerReadTimeoutSecs: Int
    /// Between two pieces of a request body.
    public var bodyIdleTimeoutSecs: Int
    /// From the end of a head to the end of its body, however steadily the body arrives: a body
    /// trickled a byte a second never trips the idle timeout.
    public var bodyTimeoutSecs: Int
    /// An open connection between requests.
    public var keepAliveTimeoutSecs: Int
    /// Client connections open at once; more are answered 503 and closed.
    public var maxConnections: Int
    /// Connections one client address may hold (0: no cap), so one client cannot take them all.
    public var maxPerClient: Int

    init(_ f: ResolvedFlags) throws(ConfigError) {
        headerReadTimeoutSecs = try RouterConfig.positive(f, "header-read-timeout-secs")
        bodyIdleTimeoutSecs = try RouterConfig.positive(f, "body-idle-timeout-secs")
        bodyTimeoutSecs = try RouterConfig.positive(f, "body-timeout-secs")
        keepAliveTimeoutSecs = try RouterConfig.positive(f, "keep-alive-timeout-secs")
        maxConnections = try RouterConfig.positive(f, "max-client-connections")
        maxPerClient = try RouterConfig.nonNegative(f, "max-connections-per-client")
        // The reference's stall timeout for request bodies it streams to a worker while they
        // arrive. smg reads every body whole before it routes, so the body deadlines above are
        // what ends a stalled one (sooner: 30 s of silence by default); accepted and checked so
        // command lines written for the reference run.
        _ = try RouterConfig.nonNegative(f, "stream-body-stall-timeout-secs")
    }

    /// The metrics port: the same timeouts, and few connections (scrapers, not clients).
    var forMetrics: ClientLimits {
        var l = self
        l.maxConnections = min(maxConnections, 64)
        return l
    }
}
