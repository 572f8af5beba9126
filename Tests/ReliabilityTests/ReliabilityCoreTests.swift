import Primitives
import Policies
import Reliability
import Testing

@Suite struct RetryPlanTests {
    struct Case {
        let retries: Int
        let outcome: AttemptOutcome
        let started: Bool
        let expected: RetryPlan.Decision
    }

    @Test func decisionsByOutcome() {
        var config = RetryConfig()
        config.jitterFactor = 0
        config.maxRetries = 3
        let cases: [Case] = [
            Case(retries: 0, outcome: .status(200), started: false, expected: .giveUp(.success)),
            Case(retries: 0, outcome: .status(404), started: false, expected: .giveUp(.notRetryable)),
            Case(retries: 0, outcome: .status(400), started: false, expected: .giveUp(.notRetryable)),
            Case(retries: 0, outcome: .status(501), started: false, expected: .giveUp(.notRetryable)),
            Case(retries: 0, outcome: .status(500), started: false, expected: .retry(afterMs: 50)),
            Case(retries: 1, outcome: .status(502), started: false, expected: .retry(afterMs: 75)),
            Case(retries: 2, outcome: .status(503), started: false, expected: .retry(afterMs: 113)),
            Case(retries: 0, outcome: .status(408), started: false, expected: .retry(afterMs: 50)),
            Case(retries: 0, outcome: .status(429), started: false, expected: .retry(afterMs: 50)),
            Case(retries: 0, outcome: .status(504), started: false, expected: .retry(afterMs: 50)),
            Case(retries: 0, outcome: .transportError, started: false, expected: .retry(afterMs: 50)),
            Case(retries: 0, outcome: .timeout, started: false, expected: .retry(afterMs: 50)),
            Case(retries: 3, outcome: .status(500), started: false, expected: .giveUp(.exhausted)),
            Case(retries: 0, outcome: .transportError, started: true, expected: .giveUp(.alreadyStreaming)),
        ]
        var rng = SplitMix64(seed: 1)
        for c in cases {
            #expect(RetryPlan.decide(retriesSoFar: c.retries, outcome: c.outcome, responseStarted: c.started, config: config, using: &rng) == c.expected, "\(c)")
        }
        config.enabled = false
        #expect(RetryPlan.decide(retriesSoFar: 0, outcome: .status(500), responseStarted: false, config: config, using: &rng) == .giveUp(.disabled))
    }

    @Test func backoffGrowsCapsAndJitters() {
        var config = RetryConfig()
        config.initialBackoffMs = 100
        config.multiplier = 2
        config.maxBackoffMs = 1000
        config.jitterFactor = 0
        var rng = SplitMix64(seed: 1)
        #expect((0..<6).map { RetryPlan.backoffMs(attempt: $0, config: config, using: &rng) } == [100, 200, 400, 800, 1000, 1000])
        #expect(RetryPlan.backoffMs(attempt: 10_000, config: config, using: &rng) == 1000, "no overflow for huge attempts")
        config.jitterFactor = 0.2
        let jittered = (0..<1000).map { _ in RetryPlan.backoffMs(attempt: 0, config: config, using: &rng) }
        #expect(jittered.allSatisfy { (100...120).contains($0) })
        #expect(Set(jittered).count > 10, "jitter varies")
    }
}

@Suite struct CircuitBreakerTests {
    func config(failures: Int = 3, successes: Int = 2, openMs: UInt64 = 1000, windowMs: UInt64 = 5000) -> CircuitBreakerConfig {
        var c = CircuitBreakerConfig()
        c.failureThreshold = failures
        c.successThreshold = successes
        c.openDurationMs = openMs
        c.windowMs = windowMs
        return c
    }

    @Test func opensAfterTheThresholdInsideTheWindow() {
        var b = CircuitBreaker(config())
        #expect(b.record(success: false, now: 0) == nil)
        #expect(b.record(success: false, now: 10) == nil)
        #expect(b.record(success: true, now: 20) == nil, "a success while closed does not reset the window count")
        #expect(b.record(success: false, now: 30) == .open)
        #expect(b.state == .open)
        #expect(!b.canPass(now: 500))
    }

    @Test func failuresOutsideTheWindowDoNotCount() {
        var b = CircuitBreaker(config(windowMs: 100))
        _ = b.record(success: false, now: 0)
        _ = b.record(success: false, now: 50)
        #expect(b.record(success: false, now: 160) == nil, "the first two fell out of the window")
        #expect(b.state == .closed)
    }

    @Test func streaksCountOutcomesInARowWhateverTheState() {
        var b = CircuitBreaker(config())
        _ = b.record(success: true, now: 0)
        _ = b.record(success: true, now: 1)
        #expect((b.consecutiveSuccesses, b.consecutiveFailures) == (2, 0))
        for t in 2..<6 { _ = b.record(success: false, now: UInt64(t)) }  // the third opens it; the fourth arrives while open
        #expect(b.state == .open)
        #expect((b.consecutiveSuccesses, b.consecutiveFailures) == (0, 4))
        _ = b.record(success: true, now: 7)
        #expect((b.consecutiveSuccesses, b.consecutiveFailures) == (1, 0))
    }

    @Test func halfOpensAfterTheTimeoutAndClosesAfterSuccesses() {
        var b = CircuitBreaker(config())
        for t in 0..<3 { _ = b.record(success: false, now: UInt64(t)) }
        let stillOpen = !b.acquire(now: 999)
        #expect(stillOpen)
        let probe = b.acquire(now: 1002)
        #expect(probe)
        #expect(b.state == .halfOpen)
        let secondProbeRefused = !b.acquire(now: 1003)
        #expect(secondProbeRefused, "one probe at a time")
        #expect(b.record(success: true, now: 1010) == nil)
        let nextProbe = b.acquire(now: 1011)
        #expect(nextProbe)
        #expect(b.record(success: true, now: 1020) == .closed)
        #expect(b.canPass(now: 1021))
    }

    @Test func aFailedProbeOpensAgain() {
        var b = CircuitBreaker(config())
        for t in 0..<3 { _ = b.record(success: false, now: UInt64(t)) }
        let probe = b.acquire(now: 2000)
        #expect(probe)
        #expect(b.record(success: false, now: 2001) == .open)
        #expect(!b.canPass(now: 2500))
        #expect(b.canPass(now: 3002))
    }

    /// Another router's transitions: an opening opens a closed breaker from now on; a closing
    /// closes an open or half-open one; neither touches a breaker already there or disabled.
    @Test func adoptedTransitions() {
        var b = CircuitBreaker(config())
        let opened = b.adoptOpen(now: 100)
        #expect(opened)
        #expect(b.state == .open && !b.canPass(now: 1000) && b.canPass(now: 2100), "open for the open duration from the adoption")
        let again = b.adoptOpen(now: 500)
        #expect(!again, "already open")
        let closing = b.adoptClosed()
        #expect(closing)
        #expect(b.state == .closed && b.canPass(now: 600))
        let closedAgain = b.adoptClosed()
        #expect(!closedAgain, "already closed")
        // Half-open (probing) closes too; failures counted before an adoption are forgotten.
        for t in 0..<3 { _ = b.record(success: false, now: UInt64(700 + t)) }
        let probe = b.acquire(now: 3000)
        #expect(probe && b.state == .halfOpen)
        let closed = b.adoptClosed()
        #expect(closed && b.state == .closed)
        for t in 0..<2 { _ = b.record(success: false, now: UInt64(3100 + t)) }
        #expect(b.record(success: false, now: 3102) == .open, "a fresh count after the adopted closing")
        var off = config()
        off.enabled = false
        var disabled = CircuitBreaker(off)
        let adopted = disabled.adoptOpen(now: 0)
        #expect(!adopted && disabled.canPass(now: 1))
    }

    @Test func disabledAlwaysPasses() {
        var c = config()
        c.enabled = false
        var b = CircuitBreaker(c)
        for t in 0..<50 { #expect(b.record(success: false, now: UInt64(t)) == nil) }
        let passed = b.acquire(now: 60)
        #expect(passed && b.state == .closed)
    }
}

@Suite struct HealthStateTests {
    @Test func thresholdsInBothDirections() {
        var c = HealthCheckConfig()
        c.failureThreshold = 3
        c.successThreshold = 2
        var h = HealthState(c)
        #expect(h.status == .unknown)
        #expect(h.record(success: true) == .healthy, "the first success of an unknown worker")
        #expect(h.record(success: false) == nil)
        #expect(h.record(success: false) == nil)
        #expect(h.record(success: true) == nil, "a success resets the failure run")
        #expect(h.record(success: false) == nil)
        #expect(h.record(success: false) == nil)
        #expect(h.record(success: false) == .unhealthy)
        #expect(h.record(success: true) == nil)
        #expect(h.record(success: false) == nil)
        #expect(h.record(success: true) == nil)
        #expect(h.record(success: true) == .healthy, "two successes in a row")
    }

    @Test func anUnknownWorkerThatNeverAnswersBecomesUnhealthy() {
        var h = HealthState(HealthCheckConfig())
        #expect(h.record(success: false) == nil)
        #expect(h.record(success: false) == nil)
        #expect(h.record(success: false) == .unhealthy)
        #expect(!h.isHealthy)
    }
}

@Suite struct TokenBucketTests {
    @Test func refillsAtTheRateUpToCapacity() {
        var b = TokenBucket(rate: 10, capacity: 3, nowMs: 0)
        var takes: [Bool] = (0..<5).map { _ in b.tryTake(nowMs: 0) }
        #expect(takes == [true, true, true, false, false])
        let wait = b.msUntilToken(nowMs: 0)
        #expect(wait == 100)
        let early = b.tryTake(nowMs: 99), onTime = b.tryTake(nowMs: 100)
        #expect(!early && onTime)
        takes = (0..<5).map { _ in b.tryTake(nowMs: 10_000) }
        #expect(takes == [true, true, true, false, false], "never above capacity")
    }

    @Test func rateChangesAndZeroRate() {
        var b = TokenBucket(rate: 0, capacity: 1, nowMs: 0)
        let first = b.tryTake(nowMs: 0)
        let never = b.msUntilToken(nowMs: 1000)
        #expect(first && never == nil)
        b.setRate(1000, nowMs: 1000)
        let refilled = b.tryTake(nowMs: 1001)
        #expect(refilled)
    }

    @Test func admitsAtTheRateOverTime() {
        var b = TokenBucket(rate: 50, capacity: 50, nowMs: 0)
        var admitted = 0
        for ms in stride(from: UInt64(0), to: 10_000, by: 1) where b.tryTake(nowMs: ms) { admitted += 1 }
        #expect(admitted >= 540 && admitted <= 551, "50/s for 10 s plus the initial burst of 50: \(admitted)")
    }
}
