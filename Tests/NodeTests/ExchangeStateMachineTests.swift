@testable import Node
import Primitives
import Policies
import Reliability
import Testing

/// A worker as the machine sees it: an id.
struct ExchangeTestWorker: ExchangeTarget { let id: String }

typealias TestMachine = ExchangeStateMachine<ExchangeTestWorker>

/// What happens to an exchange, in the order the shell would report it.
enum Event: Sendable {
    case start, admitted, queueFull, queueTimedOut
    case chosen(String, at: UInt64), noWorker(unknownModel: Bool)
    case connected(reused: Bool), connectFailed(at: UInt64)
    case head(Int, at: UInt64), body, end(keepAlive: Bool)
    case closed(beforeResponse: Bool, at: UInt64)
    case attemptTimer(at: UInt64), retryTimer(at: UInt64)
    /// PD: the prefill half of the attempt failed.
    case otherLegFailed(at: UInt64)
    case clientClosed

    func apply(to m: inout TestMachine) -> TestMachine.Action {
        switch self {
        case .start: return m.start()
        case .admitted: return m.admission(.admitted)
        case .queueFull: return m.admission(.queueFull)
        case .queueTimedOut: return m.admission(.timedOut)
        case .chosen(let id, let t): return m.workerChosen(ExchangeTestWorker(id: id), now: t)
        case .noWorker(let unknown): return m.noWorker(unknownModel: unknown)
        case .connected(let reused): return m.connected(reused: reused)
        case .connectFailed(let t): return m.connectFailed(now: t)
        case .head(let s, let t): return m.upstreamHead(status: s, now: t)
        case .body: return m.upstreamBodyPart()
        case .end(let k): return m.upstreamEnd(keepAlive: k)
        case .closed(let before, let t): return m.upstreamClosed(beforeResponse: before, now: t)
        case .attemptTimer(let t): return m.attemptTimerFired(now: t)
        case .retryTimer(let t): return m.retryTimerFired(now: t)
        case .otherLegFailed(let t): return m.otherLegFailed(now: t)
        case .clientClosed: return m.clientClosed()
        }
    }
}

/// A compact, readable rendering of an action, so each table row states the whole expected trace.
func render(_ a: TestMachine.Action) -> String {
    func end(_ e: TestMachine.AttemptEnd?) -> String {
        guard let e else { return "-" }
        return "\(e.target.id) \(e.breakerSuccess ? "ok" : "fail") \(e.connection)"
    }
    switch a {
    case .none: return "none"
    case .requestAdmission: return "admit"
    case .selectWorker(let avoiding): return "select[\(avoiding.sorted().joined(separator: ","))]"
    case .startAttempt(let t, let deadline, let first): return "start(\(t.id) until \(deadline)\(first ? " first" : ""))"
    case .sendRequest: return "send"
    case .resendOnFreshConnection: return "resend"
    case .discardConnection: return "discard"
    case .forwardHead(let exhausted): return exhausted ? "head(exhausted)" : "head"
    case .forwardBody: return "body"
    case .retry(let e, let ms): return "retry(\(end(e)), \(ms)ms)"
    case .succeed(let e, let slot): return "succeed(\(end(e))\(slot ? "; slot" : ""))"
    case .fail(let f, let e, let slot, let exhausted, let started):
        return "fail(\(f); \(end(e))\(slot ? "; slot" : "")\(exhausted ? "; exhausted" : "")\(started ? "; started" : ""))"
    case .abandon(let e, let leave, let slot): return "abandon(\(end(e))\(leave ? "; leave queue" : "")\(slot ? "; slot" : ""))"
    case .releaseSlot: return "release slot"
    }
}

func machine(admission: Bool = false, maxRetries: Int = 3, retries: Bool = true, seed: UInt64 = 1) -> TestMachine {
    var retry = RetryConfig()
    retry.maxRetries = maxRetries
    retry.initialBackoffMs = 50
    retry.multiplier = 2
    retry.jitterFactor = 0
    retry.enabled = retries
    return TestMachine(needsAdmission: admission, attemptTimeoutMs: 1000, retry: retry, seed: seed)
}

func run(_ m: inout TestMachine, _ events: [Event]) -> [String] { events.map { render($0.apply(to: &m)) } }

/// The beginning every direct (no admission) exchange shares: w1 chosen at t=0 and connected.
let connectedToW1: [(Event, String)] = [
    (.start, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"), (.connected(reused: false), "send"),
]

@Suite struct ExchangeStateMachineTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        var admission = false
        var maxRetries = 3
        var retries = true
        let steps: [(Event, String)]
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "success", steps: connectedToW1 + [
            (.head(200, at: 5), "head"), (.body, "body"), (.body, "body"), (.end(keepAlive: true), "succeed(w1 ok release)"),
            (.body, "none"), (.clientClosed, "none"),
        ]),
        Case(name: "a worker that does not keep the connection alive", steps: connectedToW1 + [
            (.head(200, at: 5), "head"), (.end(keepAlive: false), "succeed(w1 ok close)"),
        ]),
        Case(name: "a non-retryable error is the worker's answer", steps: connectedToW1 + [
            (.head(404, at: 5), "head"), (.end(keepAlive: true), "succeed(w1 ok release)"),
        ]),
        Case(name: "501 is forwarded but counts against the breaker", steps: connectedToW1 + [
            (.head(501, at: 5), "head"), (.end(keepAlive: true), "succeed(w1 fail release)"),
        ]),
        Case(name: "connection refused: retried on another worker", steps: [
            (.start, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"),
            (.connectFailed(at: 2), "retry(w1 fail none, 50ms)"),
            (.retryTimer(at: 51), "none"), (.retryTimer(at: 52), "select[w1]"),
            (.chosen("w2", at: 52), "start(w2 until 1052)"), (.connected(reused: false), "send"),
            (.head(200, at: 60), "head"), (.end(keepAlive: true), "succeed(w2 ok release)"),
        ]),
        Case(name: "a stale pooled connection is resent once on a fresh one, no failure", steps: [
            (.start, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"), (.connected(reused: true), "send"),
            (.closed(beforeResponse: true, at: 1), "resend"), (.connected(reused: false), "send"),
            (.head(200, at: 3), "head"), (.end(keepAlive: true), "succeed(w1 ok release)"),
        ]),
        Case(name: "PD: the prefill failing while connecting retries with a new pair", steps: [
            (.start, "select[]"), (.chosen("d1", at: 0), "start(d1 until 1000 first)"),
            (.otherLegFailed(at: 3), "retry(d1 fail close, 50ms)"), (.connected(reused: false), "discard"),
            (.otherLegFailed(at: 4), "none"), (.retryTimer(at: 53), "select[d1]"),
        ]),
        Case(name: "PD: the prefill failing while the decode worker thinks fails the attempt", maxRetries: 0, steps: connectedToW1 + [
            (.otherLegFailed(at: 9), "fail(upstreamFailed; w1 fail close; exhausted)"),
        ]),
        Case(name: "PD: once the decode answer is relayed, the prefill's failure changes nothing", steps: connectedToW1 + [
            (.head(200, at: 5), "head"), (.otherLegFailed(at: 6), "none"), (.body, "body"), (.end(keepAlive: true), "succeed(w1 ok release)"),
        ]),
        Case(name: "a fresh connection closed before the answer is a failure", steps: connectedToW1 + [
            (.closed(beforeResponse: true, at: 1), "retry(w1 fail none, 50ms)"),
        ]),
        Case(name: "a second stale close after the resend is a failure", steps: [
            (.start, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"), (.connected(reused: true), "send"),
            (.closed(beforeResponse: true, at: 1), "resend"), (.connected(reused: true), "send"),
            (.closed(beforeResponse: true, at: 2), "retry(w1 fail none, 50ms)"),
        ]),
        Case(name: "per-attempt timeout: retried, the late connection discarded", steps: [
            (.start, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"),
            (.attemptTimer(at: 999), "none"), (.attemptTimer(at: 1000), "retry(w1 fail close, 50ms)"),
            (.connected(reused: false), "discard"), (.attemptTimer(at: 1001), "none"),
            (.retryTimer(at: 1050), "select[w1]"), (.chosen("w2", at: 1050), "start(w2 until 2050)"),
            (.attemptTimer(at: 1100), "none"),
        ]),
        Case(name: "timeout while waiting for the head, retries exhausted: 504", maxRetries: 0, steps: connectedToW1 + [
            (.attemptTimer(at: 1000), "fail(upstreamTimeout; w1 fail close; exhausted)"),
            (.head(200, at: 1001), "none"), (.clientClosed, "none"),
        ]),
        Case(name: "retries disabled: a transport error is a 502 at once", retries: false, steps: connectedToW1 + [
            (.closed(beforeResponse: false, at: 3), "fail(upstreamFailed; w1 fail none)"),
        ]),
        Case(name: "a stream is never retried after its first byte", steps: connectedToW1 + [
            (.head(200, at: 5), "head"), (.body, "body"),
            (.closed(beforeResponse: false, at: 9), "fail(upstreamFailed; w1 fail none; started)"),
            (.retryTimer(at: 1000), "none"),
        ]),
        Case(name: "a stream that outlives the attempt timeout is cut, not retried", steps: connectedToW1 + [
            (.head(200, at: 5), "head"), (.body, "body"),
            (.attemptTimer(at: 1000), "fail(upstreamTimeout; w1 fail close; started)"),
        ]),
        Case(name: "retries back off and avoid every worker that failed", steps: connectedToW1 + [
            (.head(503, at: 5), "retry(w1 fail close, 50ms)"), (.retryTimer(at: 55), "select[w1]"),
            (.chosen("w2", at: 55), "start(w2 until 1055)"), (.connected(reused: false), "send"),
            (.head(502, at: 60), "retry(w2 fail close, 100ms)"), (.retryTimer(at: 160), "select[w1,w2]"),
            (.chosen("w3", at: 160), "start(w3 until 1160)"), (.connected(reused: false), "send"),
            (.head(200, at: 170), "head"), (.end(keepAlive: true), "succeed(w3 ok release)"),
        ]),
        Case(name: "retries exhausted: the last retryable answer is forwarded", maxRetries: 1, steps: connectedToW1 + [
            (.head(500, at: 5), "retry(w1 fail close, 50ms)"), (.retryTimer(at: 55), "select[w1]"),
            (.chosen("w2", at: 55), "start(w2 until 1055)"), (.connected(reused: false), "send"),
            (.head(500, at: 60), "head(exhausted)"), (.end(keepAlive: true), "succeed(w2 fail release)"),
        ]),
        Case(name: "no worker for the model: 404", steps: [
            (.start, "select[]"), (.noWorker(unknownModel: true), "fail(modelNotFound; -)"), (.chosen("w1", at: 0), "none"),
        ]),
        Case(name: "admitted, served, slot released with the end", admission: true, steps: [
            (.start, "admit"), (.admitted, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"),
            (.connected(reused: false), "send"), (.head(200, at: 5), "head"), (.end(keepAlive: true), "succeed(w1 ok release; slot)"),
            (.clientClosed, "none"),
        ]),
        Case(name: "admitted, but no worker is up: 503 and the slot back", admission: true, steps: [
            (.start, "admit"), (.admitted, "select[]"), (.noWorker(unknownModel: false), "fail(noWorkers; -; slot)"),
        ]),
        Case(name: "admitted, then the worker fails for good: 502 and the slot back", admission: true, maxRetries: 0, steps: [
            (.start, "admit"), (.admitted, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"),
            (.connectFailed(at: 1), "fail(upstreamFailed; w1 fail none; slot; exhausted)"),
        ]),
        Case(name: "queue full: 429, no slot to release", admission: true, steps: [
            (.start, "admit"), (.queueFull, "fail(rateLimited; -)"), (.clientClosed, "none"),
        ]),
        Case(name: "queue timeout: 408, no slot to release", admission: true, steps: [
            (.start, "admit"), (.queueTimedOut, "fail(queueTimeout; -)"),
        ]),
        Case(name: "client gone while queued: leaves the queue; a late slot goes straight back", admission: true, steps: [
            (.start, "admit"), (.clientClosed, "abandon(-; leave queue)"), (.admitted, "release slot"),
        ]),
        Case(name: "client gone mid-stream: the worker's connection is closed, the slot released", admission: true, steps: [
            (.start, "admit"), (.admitted, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"),
            (.connected(reused: false), "send"), (.head(200, at: 5), "head"), (.body, "body"),
            (.clientClosed, "abandon(w1 ok close; slot)"), (.body, "none"), (.end(keepAlive: true), "none"),
        ]),
        Case(name: "client gone while backing off: no attempt left to end", admission: true, steps: [
            (.start, "admit"), (.admitted, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"),
            (.connectFailed(at: 1), "retry(w1 fail none, 50ms)"), (.clientClosed, "abandon(-; slot)"), (.retryTimer(at: 60), "none"),
        ]),
        Case(name: "client gone while connecting: the connection that arrives later is discarded", steps: [
            (.start, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"),
            (.clientClosed, "abandon(w1 ok close)"), (.connected(reused: false), "discard"),
        ]),
    ]

    @Test(arguments: cases) func path(_ c: Case) {
        var m = machine(admission: c.admission, maxRetries: c.maxRetries, retries: c.retries)
        let trace = run(&m, c.steps.map(\.0))
        for (k, (step, got)) in zip(c.steps, trace).enumerated() {
            #expect(got == step.1, "step \(k) (\(step.0)): expected \(step.1), got \(got)")
        }
    }

    /// Random event sequences, including impossible orders: whatever happens, a granted admission
    /// slot is released exactly once, every attempt that started ends exactly once, at most one
    /// attempt runs at a time, and nothing is retried once the response started.
    @Test func invariantsHoldForAnyEventOrder() {
        var rng = SplitMix64(seed: 0x5EED)
        for run in 0..<20_000 {
            var m = machine(admission: run % 2 == 0, maxRetries: Int(rng.next() % 4), seed: rng.next())
            var now: UInt64 = 0
            var granted = 0, released = 0, started = 0, ended = 0
            var headForwarded = false
            var admissionAnswered = false
            func account(_ a: TestMachine.Action) {
                switch a {
                case .startAttempt: started += 1; #expect(started - ended == 1, "run \(run): two attempts at once")
                case .retry: ended += 1; #expect(!headForwarded, "run \(run): retried after the response started")
                case .succeed(_, let slot): ended += 1; if slot { released += 1 }
                case .fail(_, let e, let slot, _, _): if e != nil { ended += 1 }; if slot { released += 1 }
                case .abandon(let e, _, let slot): if e != nil { ended += 1 }; if slot { released += 1 }
                case .releaseSlot: released += 1
                case .forwardHead: headForwarded = true
                default: break
                }
            }
            account(m.start())
            for _ in 0..<Int(rng.next() % 24) {
                now += rng.next() % 400
                let events: [Event] = [
                    .chosen("w\(rng.next() % 3)", at: now), .noWorker(unknownModel: rng.next() % 2 == 0),
                    .connected(reused: rng.next() % 2 == 0), .connectFailed(at: now), .head([200, 404, 429, 500, 503][Int(rng.next() % 5)], at: now),
                    .body, .end(keepAlive: rng.next() % 2 == 0), .closed(beforeResponse: rng.next() % 2 == 0, at: now),
                    .attemptTimer(at: now), .retryTimer(at: now), .admitted, .queueFull, .otherLegFailed(at: now),
                ]
                var event = events[Int(rng.next() % UInt64(events.count))]
                if rng.next() % 40 == 0 { event = .clientClosed }
                if case .admitted = event {
                    // The admission controller answers once.
                    if admissionAnswered { continue }
                    admissionAnswered = true
                    granted += 1
                } else if case .queueFull = event {
                    if admissionAnswered { continue }
                    admissionAnswered = true
                }
                account(event.apply(to: &m))
            }
            // However it went, the client eventually leaves (or the exchange already finished).
            account(m.clientClosed())
            if !admissionAnswered, run % 2 == 0 {
                // A queued request whose grant races with the client leaving gives it straight back.
                granted += 1
                account(m.admission(.admitted))
            }
            #expect(m.isFinished, "run \(run): not finished")
            #expect(granted == released, "run \(run): \(granted) slots granted, \(released) released")
            #expect(started == ended, "run \(run): \(started) attempts started, \(ended) ended")
            if granted != released || started != ended { return }
        }
    }
}
