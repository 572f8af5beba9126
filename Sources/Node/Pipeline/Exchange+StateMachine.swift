import Primitives
import Policies
import Reliability

/// What an exchange needs to know about a worker: its id, to avoid it on a retry.
protocol ExchangeTarget {
    var id: String { get }
}

/// One request's exchange with the workers, as a pure state machine: every event (admission
/// answered, worker chosen, connected, upstream head/body/end, upstream closed, a timer fired,
/// client gone) moves the `State` and returns the one `Action` the shell must perform. Time is
/// an argument and randomness (retry jitter) a seeded generator, so every path is a table test
/// without sockets. `Exchange` is the shell that performs the actions on the event loop.
///
/// Invariants the machine keeps, whatever the order of events:
/// - an admission slot, once held, is released by exactly one action;
/// - every attempt that started is ended by exactly one `AttemptEnd` (in-flight count, breaker
///   report, what happens to its connection);
/// - a retry happens only before the first response byte reached the client.
struct ExchangeStateMachine<Target: ExchangeTarget> {
    /// One try at one worker.
    struct Attempt {
        var target: Target
        /// When `--request-timeout-secs` runs out for this attempt (monotonic ms).
        var deadlineMs: UInt64
        /// The connection came from the pool (a keep-alive connection the worker may have closed).
        var reusedConnection = false
        /// The one resend on a fresh connection after a stale pooled one was used.
        var resentOnFreshConnection = false
        /// The upstream status, once its head arrived.
        var status = 0
    }

    enum State {
        /// Created; `start` not called yet.
        case idle
        /// Waiting for an admission slot (queued or about to be answered).
        case waitingForAdmission
        /// The shell is asked to choose a worker.
        case selecting
        /// A connection to the attempt's worker is being acquired.
        case connecting(Attempt)
        /// The request was written; the worker has not answered yet.
        case awaitingResponse(Attempt)
        /// The response head went to the client; body parts are relayed as they come.
        case relaying(Attempt)
        /// A retry is due at `retryAtMs`.
        case backingOff(retryAtMs: UInt64)
        case finished
    }

    /// Why the router answers with an error of its own.
    enum Failure: Equatable {
        case rateLimited, queueTimeout, modelNotFound, noWorkers, upstreamTimeout, upstreamFailed
    }

    /// What to do with an attempt's upstream connection when it ends.
    enum ConnectionDisposition: Equatable {
        /// The response ended cleanly and the worker keeps the connection open: back to the pool.
        case release
        /// Close it: unfinished, unwanted or not keep-alive.
        case close
        /// There is none (never connected, or the worker closed it).
        case none
    }

    /// How an attempt ends: the shell decrements the worker's in-flight count, cancels the
    /// attempt timer, reports to the breaker and disposes of the connection.
    struct AttemptEnd {
        var target: Target
        /// For the circuit breaker: 408/429 and 2xx–4xx are successes, 5xx, timeouts and
        /// transport errors failures; a client that left reports a success (not the worker's fault).
        var breakerSuccess: Bool
        var connection: ConnectionDisposition
    }

    enum Action {
        case none
        /// Ask the admission controller; its answer comes back as `admission(_:)`.
        case requestAdmission
        /// Choose a worker, preferring those not in `avoiding`; answer with `workerChosen` or `noWorker`.
        case selectWorker(avoiding: Set<String>)
        /// Start an attempt: count it on the worker, take a breaker slot, arm the attempt timer
        /// for `deadlineMs`, acquire a connection. `firstAttempt`: record the routing decision.
        case startAttempt(Target, deadlineMs: UInt64, firstAttempt: Bool)
        /// The connection is ready: write the request on it.
        case sendRequest
        /// The pooled connection was stale: send the same request on a fresh connection.
        case resendOnFreshConnection
        /// A connection arrived for an attempt that is over: close it.
        case discardConnection
        /// Relay the upstream response head. `retriesExhausted`: it is a retryable status that
        /// could not be retried any more.
        case forwardHead(retriesExhausted: Bool)
        case forwardBody
        /// Drop this attempt and try again after `afterMs`.
        case retry(AttemptEnd, afterMs: Int)
        /// The response is complete: end the attempt, write the end.
        case succeed(AttemptEnd, releaseSlot: Bool)
        /// Answer `failure` (or close the client connection if the response already started).
        case fail(Failure, AttemptEnd?, releaseSlot: Bool, retriesExhausted: Bool, responseStarted: Bool)
        /// The client left: end what is running and leave the queue.
        case abandon(AttemptEnd?, leaveQueue: Bool, releaseSlot: Bool)
        /// A slot was granted after the exchange ended: give it straight back.
        case releaseSlot
    }

    enum AdmissionAnswer { case admitted, queueFull, timedOut }

    private(set) var state = State.idle
    /// Retries made so far.
    private(set) var retries = 0
    /// Workers that failed this request, avoided by later attempts when another can serve.
    private(set) var failedTargets: Set<String> = []
    /// Holding an admission slot that has not been released yet.
    private(set) var holdsSlot = false
    private let needsAdmission: Bool
    private let attemptTimeoutMs: UInt64
    private let retry: RetryConfig
    private var rng: SplitMix64

    init(needsAdmission: Bool, attemptTimeoutMs: UInt64, retry: RetryConfig, seed: UInt64) {
        self.needsAdmission = needsAdmission
        self.attemptTimeoutMs = attemptTimeoutMs
        self.retry = retry
        self.rng = SplitMix64(seed: seed)
    }

    var isFinished: Bool { if case .finished = state { return true } else { return false } }

    // MARK: events

    mutating func start() -> Action {
        guard case .idle = state else { return .none }
        if needsAdmission {
            state = .waitingForAdmission
            return .requestAdmission
        }
        state = .selecting
        return .selectWorker(avoiding: failedTargets)
    }

    mutating func admission(_ answer: AdmissionAnswer) -> Action {
        guard case .waitingForAdmission = state else {
            // The client left while this request waited.
            return answer == .admitted ? .releaseSlot : .none
        }
        switch answer {
        case .admitted:
            holdsSlot = true
            state = .selecting
            return .selectWorker(avoiding: failedTargets)
        case .queueFull: return finish(.rateLimited, nil, retriesExhausted: false, responseStarted: false)
        case .timedOut: return finish(.queueTimeout, nil, retriesExhausted: false, responseStarted: false)
        }
    }

    mutating func workerChosen(_ target: Target, now: UInt64) -> Action {
        guard case .selecting = state else { return .none }
        let deadline = now + attemptTimeoutMs
        state = .connecting(Attempt(target: target, deadlineMs: deadline))
        return .startAttempt(target, deadlineMs: deadline, firstAttempt: retries == 0)
    }

    mutating func noWorker(unknownModel: Bool) -> Action {
        guard case .selecting = state else { return .none }
        return finish(unknownModel ? .modelNotFound : .noWorkers, nil, retriesExhausted: false, responseStarted: false)
    }

    mutating func connected(reused: Bool) -> Action {
        guard case .connecting(var attempt) = state else { return .discardConnection }
        attempt.reusedConnection = reused
        state = .awaitingResponse(attempt)
        return .sendRequest
    }

    mutating func connectFailed(now: UInt64) -> Action {
        guard case .connecting(let attempt) = state else { return .none }
        return attemptFailed(attempt, .transportError, connection: .none, now: now)
    }

    mutating func upstreamHead(status: Int, now: UInt64) -> Action {
        guard case .awaitingResponse(var attempt) = state else { return .none }
        attempt.status = status
        var exhausted = false
        if RetryPlan.isRetryable(.status(status)) {
            switch RetryPlan.decide(retriesSoFar: retries, outcome: .status(status), responseStarted: false, config: retry, using: &rng) {
            case .retry(let delayMs):
                // Not forwarded: this answer and its connection are dropped, another worker tried.
                return backOff(AttemptEnd(target: attempt.target, breakerSuccess: status < 500, connection: .close), delayMs: delayMs, now: now)
            case .giveUp(.exhausted): exhausted = true
            case .giveUp: break
            }
        }
        state = .relaying(attempt)
        return .forwardHead(retriesExhausted: exhausted)
    }

    mutating func upstreamBodyPart() -> Action {
        guard case .relaying = state else { return .none }
        return .forwardBody
    }

    mutating func upstreamEnd(keepAlive: Bool) -> Action {
        guard case .relaying(let attempt) = state else { return .none }
        let end = AttemptEnd(target: attempt.target, breakerSuccess: attempt.status < 500, connection: keepAlive ? .release : .close)
        let releaseSlot = takeSlot()
        state = .finished
        return .succeed(end, releaseSlot: releaseSlot)
    }

    /// The worker closed the connection. `beforeResponse`: no response byte had arrived.
    mutating func upstreamClosed(beforeResponse: Bool, now: UInt64) -> Action {
        switch state {
        case .awaitingResponse(var attempt):
            if beforeResponse, attempt.reusedConnection, !attempt.resentOnFreshConnection {
                // A keep-alive connection the worker had already closed: the request never
                // reached it, so sending it again on a fresh connection is safe (and no failure).
                attempt.resentOnFreshConnection = true
                attempt.reusedConnection = false
                state = .connecting(attempt)
                return .resendOnFreshConnection
            }
            return attemptFailed(attempt, .transportError, connection: .none, now: now)
        case .relaying(let attempt):
            return attemptFailed(attempt, .transportError, connection: .none, now: now)
        default:
            return .none
        }
    }

    /// The other half of a PD attempt (its prefill) failed before the decode worker's answer
    /// began: the attempt fails as a transport error would, and a retry takes a new pair. Once
    /// the answer is being relayed, the decode worker's own outcome decides.
    mutating func otherLegFailed(now: UInt64) -> Action {
        switch state {
        case .connecting(let a), .awaitingResponse(let a): return attemptFailed(a, .transportError, connection: .close, now: now)
        default: return .none
        }
    }

    /// The attempt timer fired; stale timers (from an attempt already over) are ignored.
    mutating func attemptTimerFired(now: UInt64) -> Action {
        switch state {
        case .connecting(let a) where now >= a.deadlineMs, .awaitingResponse(let a) where now >= a.deadlineMs, .relaying(let a) where now >= a.deadlineMs:
            return attemptFailed(a, .timeout, connection: .close, now: now)
        default:
            return .none
        }
    }

    mutating func retryTimerFired(now: UInt64) -> Action {
        guard case .backingOff(let due) = state, now >= due else { return .none }
        state = .selecting
        return .selectWorker(avoiding: failedTargets)
    }

    mutating func clientClosed() -> Action {
        let attempt: Attempt?
        switch state {
        case .idle, .finished:
            return .none
        case .waitingForAdmission:
            state = .finished
            return .abandon(nil, leaveQueue: true, releaseSlot: false)
        case .selecting, .backingOff:
            attempt = nil
        case .connecting(let a), .awaitingResponse(let a), .relaying(let a):
            attempt = a
        }
        // An abandoned generation costs GPU time: the worker's connection is closed at once.
        let end = attempt.map { AttemptEnd(target: $0.target, breakerSuccess: true, connection: .close) }
        let releaseSlot = takeSlot()
        state = .finished
        return .abandon(end, leaveQueue: false, releaseSlot: releaseSlot)
    }

    // MARK: helpers

    private mutating func attemptFailed(_ attempt: Attempt, _ outcome: AttemptOutcome, connection: ConnectionDisposition, now: UInt64) -> Action {
        let end = AttemptEnd(target: attempt.target, breakerSuccess: false, connection: connection)
        let started: Bool
        if case .relaying = state { started = true } else { started = false }
        let decision = RetryPlan.decide(retriesSoFar: retries, outcome: outcome, responseStarted: started, config: retry, using: &rng)
        if case .retry(let delayMs) = decision { return backOff(end, delayMs: delayMs, now: now) }
        let exhausted = decision == .giveUp(.exhausted)
        return finish(outcome == .timeout ? .upstreamTimeout : .upstreamFailed, end, retriesExhausted: exhausted, responseStarted: started)
    }

    private mutating func backOff(_ end: AttemptEnd, delayMs: Int, now: UInt64) -> Action {
        failedTargets.insert(end.target.id)
        retries += 1
        state = .backingOff(retryAtMs: now + UInt64(delayMs))
        return .retry(end, afterMs: delayMs)
    }

    private mutating func finish(_ failure: Failure, _ end: AttemptEnd?, retriesExhausted: Bool, responseStarted: Bool) -> Action {
        let releaseSlot = takeSlot()
        state = .finished
        return .fail(failure, end, releaseSlot: releaseSlot, retriesExhausted: retriesExhausted, responseStarted: responseStarted)
    }

    /// Gives up the slot (true once, if one is held).
    private mutating func takeSlot() -> Bool {
        defer { holdsSlot = false }
        return holdsSlot
    }
}
