/// What one attempt at a worker came to, as far as retrying is concerned.
public enum AttemptOutcome: Sendable, Equatable {
    /// The worker answered with this HTTP status.
    case status(Int)
    /// The connection failed or broke before an answer (refused, reset, closed).
    case transportError
    /// The worker did not answer within the request timeout.
    case timeout
}

/// Retry knobs (the gateway's documented defaults).
public struct RetryConfig: Sendable, Equatable {
    public var maxRetries = 5
    public var initialBackoffMs = 50
    public var maxBackoffMs = 30_000
    public var multiplier = 1.5
    public var jitterFactor = 0.2
    public var enabled = true
    public init() {}
}

/// The retry decision as a pure function: retryable statuses are 408, 429, 500, 502, 503, 504
/// and transport errors/timeouts; the delay before retry `attempt` (0-based: the first retry is
/// attempt 0) is `min(initial × multiplier^attempt, max) × (1 + random(0, jitter))`.
public enum RetryPlan {
    public enum Decision: Sendable, Equatable {
        case retry(afterMs: Int)
        case giveUp(Reason)
    }

    public enum Reason: String, Sendable, Equatable {
        case success, notRetryable = "not_retryable", exhausted, disabled, alreadyStreaming = "already_streaming"
    }

    public static let retryableStatuses: Set<Int> = [408, 429, 500, 502, 503, 504]

    public static func isRetryable(_ outcome: AttemptOutcome) -> Bool {
        switch outcome {
        case .status(let s): return retryableStatuses.contains(s)
        case .transportError, .timeout: return true
        }
    }

    /// Whether and when to try again after `retriesSoFar` retries ended in `outcome`.
    /// `responseStarted`: bytes already went to the client (a stream): never retried.
    public static func decide<R: RandomNumberGenerator>(
        retriesSoFar: Int, outcome: AttemptOutcome, responseStarted: Bool, config: RetryConfig, using rng: inout R
    ) -> Decision {
        guard isRetryable(outcome) else {
            if case .status(let s) = outcome, s < 400 { return .giveUp(.success) }
            return .giveUp(.notRetryable)
        }
        guard config.enabled else { return .giveUp(.disabled) }
        guard !responseStarted else { return .giveUp(.alreadyStreaming) }
        guard retriesSoFar < config.maxRetries else { return .giveUp(.exhausted) }
        return .retry(afterMs: backoffMs(attempt: retriesSoFar, config: config, using: &rng))
    }

    public static func backoffMs<R: RandomNumberGenerator>(attempt: Int, config: RetryConfig, using rng: inout R) -> Int {
        let exponential = Double(config.initialBackoffMs) * pow(config.multiplier, Double(attempt))
        let base = min(exponential, Double(config.maxBackoffMs))
        let jitter = config.jitterFactor > 0 ? Double.random(in: 0...config.jitterFactor, using: &rng) : 0
        return Int((base * (1 + jitter)).rounded())
    }

    /// `x^n` without Foundation (n ≥ 0), saturating instead of overflowing.
    static func pow(_ x: Double, _ n: Double) -> Double {
        var result = 1.0
        var k = 0
        while Double(k) < n, result < 1e12 { result *= x; k += 1 }
        return result
    }
}
