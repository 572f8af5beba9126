/// Health check knobs (the gateway's documented defaults).
public struct HealthCheckConfig: Sendable, Equatable {
    public var failureThreshold = 3
    public var successThreshold = 2
    public var timeoutMs = 5_000
    public var intervalMs = 60_000
    public var endpoint = "/health"
    public var enabled = true
    public init() {}
}

/// A worker's health from consecutive check results: unhealthy after `failureThreshold`
/// failures in a row, healthy again after `successThreshold` successes in a row. Recovery is
/// always possible. A worker starts unknown: its first success makes it healthy at once (a
/// worker coming up at start-up), its first failures count toward unhealthy as usual.
public struct HealthState: Sendable, Equatable {
    public enum Status: String, Sendable { case unknown, healthy, unhealthy }

    public let config: HealthCheckConfig
    public private(set) var status: Status
    private var consecutiveFailures = 0
    private var consecutiveSuccesses = 0

    public init(_ config: HealthCheckConfig = HealthCheckConfig(), startHealthy: Bool = false) {
        self.config = config
        self.status = startHealthy ? .healthy : .unknown
    }

    public var isHealthy: Bool { status == .healthy }

    /// Records one check; returns the new status if it changed.
    @discardableResult
    public mutating func record(success: Bool) -> Status? {
        if success {
            consecutiveFailures = 0
            consecutiveSuccesses += 1
            if status == .unknown || (status == .unhealthy && consecutiveSuccesses >= config.successThreshold) {
                status = .healthy
                return .healthy
            }
        } else {
            consecutiveSuccesses = 0
            consecutiveFailures += 1
            if status != .unhealthy, consecutiveFailures >= config.failureThreshold {
                status = .unhealthy
                return .unhealthy
            }
        }
        return nil
    }

    /// Takes another router's verdict that the worker is down (it saw the failures): unhealthy
    /// now, back only after this router's own `successThreshold` successes. Returns whether
    /// the status changed.
    @discardableResult
    public mutating func adoptUnhealthy() -> Bool {
        guard status != .unhealthy else { return false }
        status = .unhealthy
        consecutiveSuccesses = 0
        return true
    }

    /// The verdict of the process this one took over from (an in-place upgrade), for a worker
    /// this process has not checked yet: the successor routes from its first request as its
    /// predecessor did, instead of waiting for a first check. Its own checks rule from then on.
    @discardableResult
    public mutating func inherit(_ verdict: Status) -> Bool {
        guard status == .unknown, consecutiveFailures == 0, consecutiveSuccesses == 0, verdict != .unknown else { return false }
        status = verdict
        return true
    }

    /// Without checks of its own (`enabled` false) nothing here would ever bring a worker back
    /// from another router's verdict: the other router's "healthy", or the verdict's expiry,
    /// does. With checks, only this router's own successes do. Returns whether it changed.
    @discardableResult
    public mutating func adoptHealthy() -> Bool {
        guard !config.enabled, status == .unhealthy else { return false }
        status = .healthy
        return true
    }
}
