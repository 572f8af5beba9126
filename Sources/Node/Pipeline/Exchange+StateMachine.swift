import Primitives
import Policies
import Reliability

/// What an exchange needs to know about a worker: its id, to avoid it on a retry.
protocol ExchangeTarget {
    var id: String { get }
}

/// One request's exchange with the workers, as a pure state machine: every event (admission
/// answered, worker chosen, upstream head/body/end or failure of either half, a retry timer,
/// client gone) moves the `State` and returns the one `Action` the shell must perform. Time is
/// an argument and randomness (retry jitter) a seeded generator, so every path is a table test
/// without sockets. `Exchange` is the shell that performs the actions on the event loop.
///
/// An attempt has a primary half (the whole request, or the decode half with
/// prefill/decode disaggregation) and, in PD mode, a prefill half sent at the same time. The
/// prefill's answer is never relayed; its failure fails the attempt until the decode answer is
/// being relayed, and with `return_logprob` the end of the response waits for it.
///
/// Invariants the machine keeps, whatever the order of events:
/// - an admission slot, once held, is released by exactly one action;
/// - every half that started is ended by exactly one `AttemptEnd` (in-flight count, breaker
///   report, what happens to its connection);
/// - a retry happens only before the first response byte reached the client.
///
/// Events a correct shell cannot send (a worker chosen twice, an upstream event for a half
/// that is not running) are preconditions: `UpstreamCall` delivers a worker's answer in order
/// and nothing after the call is closed, whatever the worker sends. Events that can come late
/// (an admission grant after the client left, a retry timer that raced its cancellation) are
/// answered with `.stale`.
struct ExchangeStateMachine<Target: ExchangeTarget> {
    /// The two halves of an attempt. `primary` is the whole request in regular mode.
    enum Half: Equatable { case primary, prefill }

    /// One try at one worker (or one prefill/decode pair).
    struct Attempt {
        var target: Target
        /// When `--request-timeout-secs` runs out for this attempt (monotonic ms); both halves'
        /// calls are given up then.
        var deadlineMs: UInt64
        /// The upstream status, once its head arrived.
        var status = 0
        /// PD: the prefill half, while it runs.
        var prefill: Target?
    }

    enum State {
        /// Created; `start` not called yet.
        case idle
        /// Waiting for an admission slot (queued or about to be answered).
        case waitingForAdmission
        /// The shell is asked to choose a worker (or pair).
        case selecting
        /// The request went out (a connection is being had or the worker thinks).
        case awaitingResponse(Attempt)
        /// The response head went to the client; body parts are relayed as they come.
        case relaying(Attempt)
        /// PD with `return_logprob`: the decode answer is complete and its half ended; the
        /// response's end waits for the prefill's answer (its prompt logprobs).
        case awaitingPrefill(Attempt)
        /// A retry is due at `retryAtMs`.
        case backingOff(retryAtMs: UInt64)
        case finished
    }

    /// Why the router answers with an error of its own.
    enum Failure: Equatable {
        case rateLimited, queueTimeout, modelNotFound
        case noWorkers(Half)
        /// Every usable worker of the half is overloaded and shedding is on.
        case workersOverloaded(Half)
        case upstreamTimeout(Half)
        case upstreamFailed(Half)
    }

    /// What to do with a half's upstream connection when it ends.
    enum ConnectionDisposition: Equatable {
        /// The answer ended cleanly and the worker keeps the connection open: back to the pool.
        case release
        /// Close it: unfinished, unwanted or not keep-alive.
        case close
        /// There is none (the call failed and closed it).
        case none
    }

    /// How a half ends: the shell decrements the worker's in-flight count, reports to the
    /// breaker and disposes of the call's connection.
    struct AttemptEnd {
        var target: Target
        /// For the circuit breaker: 408/429 and 2xx–4xx are successes, 5xx, timeouts and
        /// transport errors failures; a half ended for the other half's failure or because the
        /// client left reports a success (not this worker's fault).
        var breakerSuccess: Bool
        var connection: ConnectionDisposition
    }

    enum Action {
        case none
        /// The event came after what it answers was over: nothing to do.
        case stale
        /// Ask the admission controller; its answer comes back as `admission(_:)`.
        case requestAdmission
        /// Choose a worker (in PD mode a prefill and a decode worker), preferring those not in
        /// the avoid sets; answer with `workerChosen` or `noWorker`.
        case selectWorker(avoiding: Set<String>, avoidingPrefill: Set<String>)
        /// Start an attempt: count it on its worker(s), take breaker slots, send both halves
        /// with `deadlineMs`. `firstAttempt`: record the routing decision.
        case startAttempt(Target, prefill: Target?, deadlineMs: UInt64, firstAttempt: Bool)
        /// Relay the upstream response head. `retriesExhausted`: it is a retryable status that
        /// could not be retried any more.
        case forwardHead(retriesExhausted: Bool)
        case forwardBody
        /// PD: the prefill half is over while the response goes on (or after it ended): settle
        /// its books. With `return_logprob` its answer (none if it failed) is merged in.
        case endPrefill(AttemptEnd)
        /// PD with `return_logprob`: the decode half is over (settle it); the response waits.
        case awaitPrefill(AttemptEnd)
        /// Drop this attempt (both halves) and try again after `afterMs`.
        case retry(AttemptEnd, prefill: AttemptEnd?, afterMs: Int)
        /// The response is complete: end what still runs, write the end.
        case succeed(AttemptEnd?, prefill: AttemptEnd?, releaseSlot: Bool)
        /// Answer `failure` (or close the client connection if the response already started).
        case fail(Failure, AttemptEnd?, prefill: AttemptEnd?, releaseSlot: Bool, retriesExhausted: Bool, responseStarted: Bool)
        /// The client left: end what is running and leave the queue.
        case abandon(AttemptEnd?, prefill: AttemptEnd?, leaveQueue: Bool, releaseSlot: Bool)
        /// A slot was granted after the exchange ended: give it straight back.
        case releaseSlot
    }

    enum AdmissionAnswer { case admitted, queueFull, timedOut }

    private(set) var state = State.idle
    /// Retries made so far.
    private(set) var retries = 0
    /// Workers that failed this request (whole requests or decode halves), avoided by later
    /// attempts when another can serve.
    private(set) var failedTargets: Set<String> = []
    /// PD: prefill workers that failed this request, avoided likewise.
    private(set) var failedPrefills: Set<String> = []
    /// PD: a prefill half still running after its decode half's answer completed the
    /// response; it is ended when its own answer or failure comes.
    private(set) var detachedPrefill: Target?
    /// Holding an admission slot that has not been released yet.
    private(set) var holdsSlot = false
    private let needsAdmission: Bool
    /// PD with `return_logprob`: the end of a response waits for the prefill's answer.
    private let endWaitsForPrefill: Bool
    private let attemptTimeoutMs: UInt64
    private let retry: RetryConfig
    private var rng: SplitMix64

    init(needsAdmission: Bool, endWaitsForPrefill: Bool = false, attemptTimeoutMs: UInt64, retry: RetryConfig, seed: UInt64) {
        self.needsAdmission = needsAdmission
        self.endWaitsForPrefill = endWaitsForPrefill
        self.attemptTimeoutMs = attemptTimeoutMs
        self.retry = retry
        self.rng = SplitMix64(seed: seed)
    }

    var isFinished: Bool { if case .finished = state { return true } else { return false } }

    // MARK: events

    mutating func start() -> Action {
        guard case .idle = state else { preconditionFailure("an exchange is started once") }
        if needsAdmission {
            state = .waitingForAdmission
            return .requestAdmission
        }
        return select()
    }

    mutating func admission(_ answer: AdmissionAnswer) -> Action {
        switch state {
        case .waitingForAdmission: break
        case .finished:
            // The client left while this request waited.
            return answer == .admitted ? .releaseSlot : .stale
        default: preconditionFailure("an admission answer without a request for one: \(state)")
        }
        switch answer {
        case .admitted:
            holdsSlot = true
            return select()
        case .queueFull: return finish(.rateLimited, nil, retriesExhausted: false, responseStarted: false)
        case .timedOut: return finish(.queueTimeout, nil, retriesExhausted: false, responseStarted: false)
        }
    }

    /// The shell chose `target` (and in PD mode `prefill`).
    mutating func workerChosen(_ target: Target, prefill: Target? = nil, now: UInt64) -> Action {
        guard case .selecting = state else { preconditionFailure("a worker chosen while \(state)") }
        let deadline = now + attemptTimeoutMs
        state = .awaitingResponse(Attempt(target: target, deadlineMs: deadline, prefill: prefill))
        return .startAttempt(target, prefill: prefill, deadlineMs: deadline, firstAttempt: retries == 0)
    }

    /// Why selection found no worker.
    enum NoWorker: Equatable {
        /// No worker serves the model named.
        case unknownModel
        /// None is healthy, available and allowed by its breaker.
        case noneAvailable
        /// Every usable one is overloaded and `--worker-overload-shed` refuses the request.
        case overloaded
    }

    /// No worker can serve: `missing` names the half that has none in PD mode.
    mutating func noWorker(_ why: NoWorker, missing: Half = .primary) -> Action {
        guard case .selecting = state else { preconditionFailure("no worker chosen while \(state)") }
        let failure: Failure = switch why {
        case .unknownModel: .modelNotFound
        case .noneAvailable: .noWorkers(missing)
        case .overloaded: .workersOverloaded(missing)
        }
        return finish(failure, nil, retriesExhausted: false, responseStarted: false)
    }

    mutating func upstreamHead(status: Int, now: UInt64) -> Action {
        guard case .awaitingResponse(var attempt) = state else { preconditionFailure("a response head while \(state)") }
        attempt.status = status
        var exhausted = false
        if RetryPlan.isRetryable(.status(status)) {
            switch RetryPlan.decide(retriesSoFar: retries, outcome: .status(status), responseStarted: false, config: retry, using: &rng) {
            case .retry(let delayMs):
                // Not forwarded: this answer and its connection are dropped, another worker tried.
                let end = AttemptEnd(target: attempt.target, breakerSuccess: status < 500, connection: .close)
                failedTargets.insert(attempt.target.id)
                return backOff(end, prefill: unneededPrefill(attempt), delayMs: delayMs, now: now)
            case .giveUp(.exhausted): exhausted = true
            case .giveUp: break
            }
        }
        state = .relaying(attempt)
        return .forwardHead(retriesExhausted: exhausted)
    }

    mutating func upstreamBodyPart() -> Action {
        guard case .relaying = state else { preconditionFailure("a response body part while \(state)") }
        return .forwardBody
    }

    mutating func upstreamEnd(keepAlive: Bool) -> Action {
        guard case .relaying(var attempt) = state else { preconditionFailure("a response end while \(state)") }
        let end = AttemptEnd(target: attempt.target, breakerSuccess: attempt.status < 500, connection: keepAlive ? .release : .close)
        if attempt.prefill != nil, endWaitsForPrefill {
            state = .awaitingPrefill(attempt)
            return .awaitPrefill(end)
        }
        // Without a merge the prefill's answer is not needed, but it is read to its end, so its
        // connection goes back to the pool clean and its worker's books are right.
        detachedPrefill = attempt.prefill
        attempt.prefill = nil
        let releaseSlot = takeSlot()
        state = .finished
        return .succeed(end, prefill: nil, releaseSlot: releaseSlot)
    }

    /// The primary half's call failed: `timedOut` (the attempt's deadline passed) or a
    /// transport error (no connection, or it closed before the answer ended).
    mutating func upstreamFailed(timedOut: Bool, now: UInt64) -> Action {
        switch state {
        case .awaitingResponse(let attempt):
            if timedOut, attempt.prefill != nil {
                // The decode half waits for the KV cache of a prefill that has not answered by
                // the deadline either: the prefill is what failed.
                return prefillFailed(attempt, timedOut: true, prefillConnection: .close, primaryConnection: .none, now: now)
            }
            return primaryFailed(attempt, timedOut: timedOut, responseStarted: false, now: now)
        case .relaying(let attempt):
            return primaryFailed(attempt, timedOut: timedOut, responseStarted: true, now: now)
        default:
            preconditionFailure("a response failure while \(state)")
        }
    }

    /// PD: the prefill half's answer ended with `status` (its call holds the connection).
    mutating func prefillEnded(status: Int, keepAlive: Bool, now: UInt64) -> Action {
        let connection: ConnectionDisposition = keepAlive ? .release : .close
        guard status < 500 else { return prefillFailed(timedOut: false, connection: connection, now: now) }
        return prefillOver(AttemptEnd(target: runningPrefill(), breakerSuccess: true, connection: connection))
    }

    /// PD: the prefill half's call failed (`timedOut`: the attempt's deadline passed).
    mutating func prefillCallFailed(timedOut: Bool, now: UInt64) -> Action {
        prefillFailed(timedOut: timedOut, connection: .none, now: now)
    }

    /// The backoff timer fired. The shell's timer is the authority on when (it fires no
    /// earlier than `retryAtMs`); only a timer that raced the client leaving is stale.
    mutating func retryTimerFired() -> Action {
        guard case .backingOff = state else { return .stale }
        return select()
    }

    mutating func clientClosed() -> Action {
        let attempt: Attempt?
        switch state {
        case .idle, .finished:
            return .stale
        case .waitingForAdmission:
            state = .finished
            return .abandon(nil, prefill: nil, leaveQueue: true, releaseSlot: false)
        case .selecting, .backingOff:
            attempt = nil
        case .awaitingResponse(let a), .relaying(let a):
            attempt = a
        case .awaitingPrefill(let a):
            // The decode half already ended: only the prefill runs.
            let releaseSlot = takeSlot()
            state = .finished
            return .abandon(nil, prefill: unneededPrefill(a), leaveQueue: false, releaseSlot: releaseSlot)
        }
        // An abandoned generation costs GPU time: the workers' connections are closed at once.
        let end = attempt.map { AttemptEnd(target: $0.target, breakerSuccess: true, connection: .close) }
        let releaseSlot = takeSlot()
        state = .finished
        return .abandon(end, prefill: attempt.flatMap(unneededPrefill), leaveQueue: false, releaseSlot: releaseSlot)
    }

    // MARK: helpers

    private mutating func select() -> Action {
        state = .selecting
        return .selectWorker(avoiding: failedTargets, avoidingPrefill: failedPrefills)
    }

    /// The running prefill half the shell reports on: the current attempt's or the detached one.
    private func runningPrefill() -> Target {
        switch state {
        case .awaitingResponse(let a), .relaying(let a), .awaitingPrefill(let a):
            if let p = a.prefill { return p }
        default: break
        }
        guard let p = detachedPrefill else { preconditionFailure("a prefill event while none runs (\(state))") }
        return p
    }

    /// The prefill half ended (answered or failed) without failing the attempt.
    private mutating func prefillOver(_ end: AttemptEnd) -> Action {
        switch state {
        case .awaitingResponse(var a):
            a.prefill = nil
            state = .awaitingResponse(a)
        case .relaying(var a):
            a.prefill = nil
            state = .relaying(a)
        case .awaitingPrefill:
            let releaseSlot = takeSlot()
            state = .finished
            return .succeed(nil, prefill: end, releaseSlot: releaseSlot)
        default:
            detachedPrefill = nil
        }
        return .endPrefill(end)
    }

    private mutating func prefillFailed(timedOut: Bool, connection: ConnectionDisposition, now: UInt64) -> Action {
        let target = runningPrefill()
        if case .awaitingResponse(let attempt) = state {
            // Before the decode answer begins, a failed prefill fails the attempt: the KV cache
            // will never reach the decode worker.
            return prefillFailed(attempt, timedOut: timedOut, prefillConnection: connection, primaryConnection: .close, now: now)
        }
        // Once the decode answer is relayed, the decode worker's own outcome decides.
        return prefillOver(AttemptEnd(target: target, breakerSuccess: false, connection: connection))
    }

    /// The attempt fails because its prefill half did: the prefill is blamed and avoided, the
    /// decode half is closed unblamed.
    private mutating func prefillFailed(_ attempt: Attempt, timedOut: Bool, prefillConnection: ConnectionDisposition,
                                        primaryConnection: ConnectionDisposition, now: UInt64) -> Action {
        guard let prefill = attempt.prefill else { preconditionFailure("a prefill failure in an attempt without one") }
        let prefillEnd = AttemptEnd(target: prefill, breakerSuccess: false, connection: prefillConnection)
        let primaryEnd = AttemptEnd(target: attempt.target, breakerSuccess: true, connection: primaryConnection)
        let decision = RetryPlan.decide(retriesSoFar: retries, outcome: timedOut ? .timeout : .transportError, responseStarted: false,
                                        config: retry, using: &rng)
        if case .retry(let delayMs) = decision {
            failedPrefills.insert(prefill.id)
            return backOff(primaryEnd, prefill: prefillEnd, delayMs: delayMs, now: now)
        }
        return finish(timedOut ? .upstreamTimeout(.prefill) : .upstreamFailed(.prefill), primaryEnd, prefill: prefillEnd,
                      retriesExhausted: decision == .giveUp(.exhausted), responseStarted: false)
    }

    private mutating func primaryFailed(_ attempt: Attempt, timedOut: Bool, responseStarted: Bool, now: UInt64) -> Action {
        let end = AttemptEnd(target: attempt.target, breakerSuccess: false, connection: .none)
        let decision = RetryPlan.decide(retriesSoFar: retries, outcome: timedOut ? .timeout : .transportError, responseStarted: responseStarted,
                                        config: retry, using: &rng)
        if case .retry(let delayMs) = decision {
            failedTargets.insert(attempt.target.id)
            return backOff(end, prefill: unneededPrefill(attempt), delayMs: delayMs, now: now)
        }
        return finish(timedOut ? .upstreamTimeout(.primary) : .upstreamFailed(.primary), end, prefill: unneededPrefill(attempt),
                      retriesExhausted: decision == .giveUp(.exhausted), responseStarted: responseStarted)
    }

    /// The end of a prefill half that is not needed any more (its attempt is over for another
    /// reason): closed, its worker not blamed.
    private func unneededPrefill(_ attempt: Attempt) -> AttemptEnd? {
        attempt.prefill.map { AttemptEnd(target: $0, breakerSuccess: true, connection: .close) }
    }

    private mutating func backOff(_ end: AttemptEnd, prefill: AttemptEnd?, delayMs: Int, now: UInt64) -> Action {
        retries += 1
        state = .backingOff(retryAtMs: now + UInt64(delayMs))
        return .retry(end, prefill: prefill, afterMs: delayMs)
    }

    private mutating func finish(_ failure: Failure, _ end: AttemptEnd?, prefill: AttemptEnd? = nil, retriesExhausted: Bool, responseStarted: Bool) -> Action {
        let releaseSlot = takeSlot()
        state = .finished
        return .fail(failure, end, prefill: prefill, releaseSlot: releaseSlot, retriesExhausted: retriesExhausted, responseStarted: responseStarted)
    }

    /// Gives up the slot (true once, if one is held).
    private mutating func takeSlot() -> Bool {
        defer { holdsSlot = false }
        return holdsSlot
    }
}
