/// Circuit breaker knobs (the gateway's documented defaults).
public struct CircuitBreakerConfig: Sendable, Equatable {
    public var failureThreshold = 10
    public var successThreshold = 3
    public var openDurationMs: UInt64 = 60_000
    public var windowMs: UInt64 = 120_000
    /// Requests let through at once while half-open.
    public var halfOpenProbes = 1
    public var enabled = true
    public init() {}
}

/// A per-worker circuit breaker as a pure state machine; time (`now`, milliseconds) is an
/// argument. Closed: failures inside the sliding window are counted, and reaching the threshold
/// opens the circuit. Open: nothing goes through until `openDurationMs` has passed, then it is
/// half-open. Half-open: up to `halfOpenProbes` requests at a time; `successThreshold`
/// successes close it, any failure opens it again.
public struct CircuitBreaker: Sendable, Equatable {
    public enum State: String, Sendable, Equatable { case closed, open, halfOpen = "half_open" }
    /// A change of state, for metrics and logs (`smg_worker_cb_transitions_total{from,to}`).
    public struct Transition: Sendable, Equatable {
        public let from: State
        public let to: State
        public init(from: State, to: State) {
            self.from = from
            self.to = to
        }
    }

    public let config: CircuitBreakerConfig
    public private(set) var state = State.closed
    /// Failure times inside the window (closed state).
    private var failures: [UInt64] = []
    private var openedAt: UInt64 = 0
    private var probesInFlight = 0
    private var halfOpenSuccesses = 0
    /// Outcomes of the same kind in a row, whatever the state (metrics: the gateway's
    /// `smg_worker_cb_consecutive_failures` and `_successes`); one resets the other.
    public private(set) var consecutiveFailures = 0
    public private(set) var consecutiveSuccesses = 0

    public init(_ config: CircuitBreakerConfig = CircuitBreakerConfig()) { self.config = config }

    /// Whether a request may be sent now, without changing anything (for building candidates).
    public func canPass(now: UInt64) -> Bool {
        guard config.enabled else { return true }
        switch state {
        case .closed: return true
        case .open: return now >= openedAt + config.openDurationMs && config.halfOpenProbes > 0
        case .halfOpen: return probesInFlight < config.halfOpenProbes
        }
    }

    /// Takes the slot for a request about to be sent (moves an expired open circuit to
    /// half-open). Returns false, changing nothing, when the request may not pass.
    public mutating func acquire(now: UInt64) -> Bool {
        guard config.enabled else { return true }
        guard canPass(now: now) else { return false }
        if state == .open {
            state = .halfOpen
            halfOpenSuccesses = 0
            probesInFlight = 0
        }
        if state == .halfOpen { probesInFlight += 1 }
        return true
    }

    /// Records how a request that acquired a slot ended; returns the new state if it changed.
    @discardableResult
    public mutating func record(success: Bool, now: UInt64) -> State? {
        guard config.enabled else { return nil }
        if success {
            consecutiveSuccesses += 1
            consecutiveFailures = 0
        } else {
            consecutiveFailures += 1
            consecutiveSuccesses = 0
        }
        switch state {
        case .closed:
            guard !success else { return nil }
            failures.append(now)
            failures.removeAll { $0 + config.windowMs <= now }
            if failures.count >= config.failureThreshold { return open(now) }
            return nil
        case .halfOpen:
            probesInFlight = max(0, probesInFlight - 1)
            guard success else { return open(now) }
            halfOpenSuccesses += 1
            if halfOpenSuccesses >= config.successThreshold {
                state = .closed
                failures.removeAll()
                return .closed
            }
            return nil
        case .open:
            // A request that started before the circuit opened: it changes nothing.
            return nil
        }
    }

    /// Another router's breaker for this worker opened: a closed one opens too (from `now`, for
    /// the open duration), so every router routes around the worker alike. Returns whether it
    /// changed; an open or half-open one is left as it is.
    public mutating func adoptOpen(now: UInt64) -> Bool {
        guard config.enabled, state == .closed else { return false }
        _ = open(now)
        return true
    }

    /// Another router's breaker for this worker closed (its probes succeeded): an open or
    /// half-open one closes too. Returns whether it changed.
    public mutating func adoptClosed() -> Bool {
        guard config.enabled, state != .closed else { return false }
        state = .closed
        failures.removeAll()
        probesInFlight = 0
        halfOpenSuccesses = 0
        return true
    }

    private mutating func open(_ now: UInt64) -> State {
        state = .open
        openedAt = now
        failures.removeAll()
        probesInFlight = 0
        halfOpenSuccesses = 0
        return .open
    }
}
