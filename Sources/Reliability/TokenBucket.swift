/// A token bucket: `rate` tokens per second up to `capacity`; time (`nowMs`) is an argument.
///
/// The router's admission takes one token per request. With the mesh, the refill rate is this
/// router's share of the cluster-wide budget (`DemandShares`), set through `setRate`.
public struct TokenBucket: Sendable, Equatable {
    public private(set) var rate: Double
    public private(set) var capacity: Double
    public private(set) var tokens: Double
    /// How many seconds of the rate the bucket holds: its stored burst.
    public let burstSeconds: Double
    private var lastRefillMs: UInt64

    /// `full`: whether it starts with its burst stored (a router joining a cluster budget starts
    /// empty, so routers starting together do not each bring a burst).
    public init(rate: Double, capacity: Double? = nil, burstSeconds: Double = 1, full: Bool = true, nowMs: UInt64) {
        self.rate = max(0, rate)
        self.burstSeconds = max(0, burstSeconds)
        self.capacity = max(1, capacity ?? self.rate * self.burstSeconds)
        self.tokens = full ? self.capacity : 0
        self.lastRefillMs = nowMs
    }

    private mutating func refill(_ nowMs: UInt64) {
        guard nowMs > lastRefillMs else { return }
        tokens = min(capacity, tokens + Double(nowMs - lastRefillMs) * rate / 1000)
        lastRefillMs = nowMs
    }

    /// Takes a token if one is there.
    public mutating func tryTake(nowMs: UInt64) -> Bool {
        refill(nowMs)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }

    /// Milliseconds until a token will be there (0 if one is now); nil when the rate is 0.
    public mutating func msUntilToken(nowMs: UInt64) -> UInt64? {
        refill(nowMs)
        if tokens >= 1 { return 0 }
        guard rate > 0 else { return nil }
        return UInt64(((1 - tokens) / rate * 1000).rounded(.up))
    }

    /// A new refill rate from now on (this router's share of a cluster-wide budget); the
    /// burst capacity follows it (`burstSeconds` of the new rate, at least one token), so a
    /// smaller share cannot be exceeded by a stored burst, and the routers' bursts together
    /// are `burstSeconds` of the cluster's budget.
    public mutating func setRate(_ newRate: Double, nowMs: UInt64) {
        refill(nowMs)
        rate = max(0, newRate)
        capacity = max(1, rate * burstSeconds)
        tokens = min(tokens, capacity)
    }
}
