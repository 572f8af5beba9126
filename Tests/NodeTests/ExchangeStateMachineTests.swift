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
    case chosen(String, prefill: String? = nil, at: UInt64), noWorker(TestMachine.NoWorker, missing: TestMachine.Half = .primary)
    /// The primary half's call: the worker's answer, or its failure.
    case head(Int, at: UInt64), body, end(keepAlive: Bool), failed(timedOut: Bool, at: UInt64)
    /// PD: the prefill half's call.
    case prefillEnd(Int, keepAlive: Bool, at: UInt64), prefillFailed(timedOut: Bool, at: UInt64)
    case retryTimer(at: UInt64)
    case clientClosed

    func apply(to m: inout TestMachine) -> TestMachine.Action {
        switch self {
        case .start: return m.start()
        case .admitted: return m.admission(.admitted)
        case .queueFull: return m.admission(.queueFull)
        case .queueTimedOut: return m.admission(.timedOut)
        case .chosen(let id, let p, let t): return m.workerChosen(ExchangeTestWorker(id: id), prefill: p.map(ExchangeTestWorker.init), now: t)
        case .noWorker(let why, let missing): return m.noWorker(why, missing: missing)
        case .head(let s, let t): return m.upstreamHead(status: s, now: t)
        case .body: return m.upstreamBodyPart()
        case .end(let k): return m.upstreamEnd(keepAlive: k)
        case .failed(let timedOut, let t): return m.upstreamFailed(timedOut: timedOut, now: t)
        case .prefillEnd(let s, let k, let t): return m.prefillEnded(status: s, keepAlive: k, now: t)
        case .prefillFailed(let timedOut, let t): return m.prefillCallFailed(timedOut: timedOut, now: t)
        case .retryTimer: return m.retryTimerFired()
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
    func prefill(_ e: TestMachine.AttemptEnd?) -> String { e.map { "; prefill \(end($0))" } ?? "" }
    func failure(_ f: TestMachine.Failure) -> String {
        switch f {
        case .noWorkers(let h): return "noWorkers(\(h))"
        case .workersOverloaded(let h): return "workersOverloaded(\(h))"
        case .upstreamTimeout(let h): return "upstreamTimeout(\(h))"
        case .upstreamFailed(let h): return "upstreamFailed(\(h))"
        default: return "\(f)"
        }
    }
    switch a {
    case .none: return "none"
    case .stale: return "stale"
    case .requestAdmission: return "admit"
    case .selectWorker(let avoiding, let avoidingPrefill):
        return "select[\(avoiding.sorted().joined(separator: ","))\(avoidingPrefill.isEmpty ? "" : "; prefill " + avoidingPrefill.sorted().joined(separator: ","))]"
    case .startAttempt(let t, let p, let deadline, let first): return "start(\(t.id)\(p.map { "+" + $0.id } ?? "") until \(deadline)\(first ? " first" : ""))"
    case .forwardHead(let exhausted): return exhausted ? "head(exhausted)" : "head"
    case .forwardBody: return "body"
    case .endPrefill(let e): return "end prefill(\(end(e)))"
    case .awaitPrefill(let e): return "await prefill(\(end(e)))"
    case .retry(let e, let p, let ms): return "retry(\(end(e))\(prefill(p)), \(ms)ms)"
    case .succeed(let e, let p, let slot): return "succeed(\(end(e))\(prefill(p))\(slot ? "; slot" : ""))"
    case .fail(let f, let e, let p, let slot, let exhausted, let started):
        return "fail(\(failure(f)); \(end(e))\(prefill(p))\(slot ? "; slot" : "")\(exhausted ? "; exhausted" : "")\(started ? "; started" : ""))"
    case .abandon(let e, let p, let leave, let slot): return "abandon(\(end(e))\(prefill(p))\(leave ? "; leave queue" : "")\(slot ? "; slot" : ""))"
    case .releaseSlot: return "release slot"
    }
}

func machine(admission: Bool = false, mergesPrefill: Bool = false, maxRetries: Int = 3, retries: Bool = true, seed: UInt64 = 1) -> TestMachine {
    var retry = RetryConfig()
    retry.maxRetries = maxRetries
    retry.initialBackoffMs = 50
    retry.multiplier = 2
    retry.jitterFactor = 0
    retry.enabled = retries
    return TestMachine(needsAdmission: admission, endWaitsForPrefill: mergesPrefill, attemptTimeoutMs: 1000, retry: retry, seed: seed)
}

func run(_ m: inout TestMachine, _ events: [Event]) -> [String] { events.map { render($0.apply(to: &m)) } }

/// The beginning every direct (no admission) exchange shares: w1 chosen at t=0, the request sent.
let sentToW1: [(Event, String)] = [(.start, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)")]
/// The same in PD mode: decode worker d1 and prefill worker p1.
let sentToPair: [(Event, String)] = [(.start, "select[]"), (.chosen("d1", prefill: "p1", at: 0), "start(d1+p1 until 1000 first)")]

@Suite struct ExchangeStateMachineTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        var admission = false
        var mergesPrefill = false
        var maxRetries = 3
        var retries = true
        let steps: [(Event, String)]
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "success", steps: sentToW1 + [
            (.head(200, at: 5), "head"), (.body, "body"), (.body, "body"), (.end(keepAlive: true), "succeed(w1 ok release)"),
            (.clientClosed, "stale"),
        ]),
        Case(name: "a worker that does not keep the connection alive", steps: sentToW1 + [
            (.head(200, at: 5), "head"), (.end(keepAlive: false), "succeed(w1 ok close)"),
        ]),
        Case(name: "a non-retryable error is the worker's answer", steps: sentToW1 + [
            (.head(404, at: 5), "head"), (.end(keepAlive: true), "succeed(w1 ok release)"),
        ]),
        Case(name: "501 is forwarded but counts against the breaker", steps: sentToW1 + [
            (.head(501, at: 5), "head"), (.end(keepAlive: true), "succeed(w1 fail release)"),
        ]),
        Case(name: "connection refused: retried on another worker", steps: sentToW1 + [
            (.failed(timedOut: false, at: 2), "retry(w1 fail none, 50ms)"),
            (.retryTimer(at: 52), "select[w1]"),
            (.chosen("w2", at: 52), "start(w2 until 1052)"),
            (.head(200, at: 60), "head"), (.end(keepAlive: true), "succeed(w2 ok release)"),
        ]),
        Case(name: "per-attempt timeout: retried elsewhere", steps: sentToW1 + [
            (.failed(timedOut: true, at: 1000), "retry(w1 fail none, 50ms)"),
            (.retryTimer(at: 1050), "select[w1]"), (.chosen("w2", at: 1050), "start(w2 until 2050)"),
        ]),
        Case(name: "timeout while waiting for the head, retries exhausted: 504", maxRetries: 0, steps: sentToW1 + [
            (.failed(timedOut: true, at: 1000), "fail(upstreamTimeout(primary); w1 fail none; exhausted)"),
            (.clientClosed, "stale"),
        ]),
        Case(name: "retries disabled: a transport error is a 502 at once", retries: false, steps: sentToW1 + [
            (.failed(timedOut: false, at: 3), "fail(upstreamFailed(primary); w1 fail none)"),
        ]),
        Case(name: "a stream is never retried after its first byte", steps: sentToW1 + [
            (.head(200, at: 5), "head"), (.body, "body"),
            (.failed(timedOut: false, at: 9), "fail(upstreamFailed(primary); w1 fail none; started)"),
            (.retryTimer(at: 1000), "stale"),
        ]),
        Case(name: "a stream that outlives the attempt timeout is cut, not retried", steps: sentToW1 + [
            (.head(200, at: 5), "head"), (.body, "body"),
            (.failed(timedOut: true, at: 1000), "fail(upstreamTimeout(primary); w1 fail none; started)"),
        ]),
        Case(name: "retries back off and avoid every worker that failed", steps: sentToW1 + [
            (.head(503, at: 5), "retry(w1 fail close, 50ms)"), (.retryTimer(at: 55), "select[w1]"),
            (.chosen("w2", at: 55), "start(w2 until 1055)"),
            (.head(502, at: 60), "retry(w2 fail close, 100ms)"), (.retryTimer(at: 160), "select[w1,w2]"),
            (.chosen("w3", at: 160), "start(w3 until 1160)"),
            (.head(200, at: 170), "head"), (.end(keepAlive: true), "succeed(w3 ok release)"),
        ]),
        Case(name: "retries exhausted: the last retryable answer is forwarded", maxRetries: 1, steps: sentToW1 + [
            (.head(500, at: 5), "retry(w1 fail close, 50ms)"), (.retryTimer(at: 55), "select[w1]"),
            (.chosen("w2", at: 55), "start(w2 until 1055)"),
            (.head(500, at: 60), "head(exhausted)"), (.end(keepAlive: true), "succeed(w2 fail release)"),
        ]),
        Case(name: "no worker for the model: 404", steps: [
            (.start, "select[]"), (.noWorker(.unknownModel), "fail(modelNotFound; -)"),
        ]),
        Case(name: "admitted, served, slot released with the end", admission: true, steps: [
            (.start, "admit"), (.admitted, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"),
            (.head(200, at: 5), "head"), (.end(keepAlive: true), "succeed(w1 ok release; slot)"),
            (.clientClosed, "stale"),
        ]),
        Case(name: "admitted, but no worker is up: 503 and the slot back", admission: true, steps: [
            (.start, "admit"), (.admitted, "select[]"), (.noWorker(.noneAvailable), "fail(noWorkers(primary); -; slot)"),
        ]),
        Case(name: "admitted, but every worker is overloaded and shedding is on: 503 and the slot back", admission: true, steps: [
            (.start, "admit"), (.admitted, "select[]"), (.noWorker(.overloaded), "fail(workersOverloaded(primary); -; slot)"),
        ]),
        Case(name: "a retry finds every worker overloaded: shed, the failed attempt already ended", steps: [
            (.start, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"),
            (.head(503, at: 5), "retry(w1 fail close, 50ms)"), (.retryTimer(at: 55), "select[w1]"),
            (.noWorker(.overloaded), "fail(workersOverloaded(primary); -)"),
        ]),
        Case(name: "admitted, then the worker fails for good: 502 and the slot back", admission: true, maxRetries: 0, steps: [
            (.start, "admit"), (.admitted, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"),
            (.failed(timedOut: false, at: 1), "fail(upstreamFailed(primary); w1 fail none; slot; exhausted)"),
        ]),
        Case(name: "queue full: 429, no slot to release", admission: true, steps: [
            (.start, "admit"), (.queueFull, "fail(rateLimited; -)"), (.clientClosed, "stale"),
        ]),
        Case(name: "queue timeout: 408, no slot to release", admission: true, steps: [
            (.start, "admit"), (.queueTimedOut, "fail(queueTimeout; -)"),
        ]),
        Case(name: "client gone while queued: leaves the queue; a late slot goes straight back", admission: true, steps: [
            (.start, "admit"), (.clientClosed, "abandon(-; leave queue)"), (.admitted, "release slot"),
        ]),
        Case(name: "client gone mid-stream: the worker's connection is closed, the slot released", admission: true, steps: [
            (.start, "admit"), (.admitted, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"),
            (.head(200, at: 5), "head"), (.body, "body"), (.clientClosed, "abandon(w1 ok close; slot)"),
        ]),
        Case(name: "client gone while backing off: no attempt left to end", admission: true, steps: [
            (.start, "admit"), (.admitted, "select[]"), (.chosen("w1", at: 0), "start(w1 until 1000 first)"),
            (.failed(timedOut: false, at: 1), "retry(w1 fail none, 50ms)"), (.clientClosed, "abandon(-; slot)"), (.retryTimer(at: 60), "stale"),
        ]),

        // Prefill/decode disaggregation: both halves of an attempt in the machine.
        Case(name: "PD: the prefill answers first, the decode answer is the response", steps: sentToPair + [
            (.prefillEnd(200, keepAlive: true, at: 3), "end prefill(p1 ok release)"),
            (.head(200, at: 5), "head"), (.body, "body"), (.end(keepAlive: true), "succeed(d1 ok release)"),
        ]),
        Case(name: "PD: a decode answer that ends first leaves the prefill to be read to its end", steps: sentToPair + [
            (.head(200, at: 5), "head"), (.end(keepAlive: true), "succeed(d1 ok release)"),
            (.clientClosed, "stale"), (.prefillEnd(200, keepAlive: false, at: 9), "end prefill(p1 ok close)"),
        ]),
        Case(name: "PD: a detached prefill that fails is blamed, the response already complete", steps: sentToPair + [
            (.head(200, at: 5), "head"), (.end(keepAlive: true), "succeed(d1 ok release)"),
            (.prefillFailed(timedOut: true, at: 1000), "end prefill(p1 fail none)"),
        ]),
        Case(name: "PD: the prefill's transport failure retries with a new pair, avoiding only the prefill", steps: sentToPair + [
            (.prefillFailed(timedOut: false, at: 3), "retry(d1 ok close; prefill p1 fail none, 50ms)"),
            (.retryTimer(at: 53), "select[; prefill p1]"), (.chosen("d1", prefill: "p2", at: 53), "start(d1+p2 until 1053)"),
            (.prefillEnd(200, keepAlive: true, at: 60), "end prefill(p2 ok release)"),
            (.head(200, at: 70), "head"), (.end(keepAlive: true), "succeed(d1 ok release)"),
        ]),
        Case(name: "PD: a prefill answering 503 fails the attempt; its connection is reusable", steps: sentToPair + [
            (.prefillEnd(503, keepAlive: true, at: 3), "retry(d1 ok close; prefill p1 fail release, 50ms)"),
        ]),
        Case(name: "PD: the prefill failing for good is a 502 of the prefill half", maxRetries: 0, steps: sentToPair + [
            (.prefillFailed(timedOut: false, at: 9), "fail(upstreamFailed(prefill); d1 ok close; prefill p1 fail none; exhausted)"),
        ]),
        Case(name: "PD: once the decode answer is relayed, the prefill's failure changes nothing", steps: sentToPair + [
            (.head(200, at: 5), "head"), (.prefillFailed(timedOut: false, at: 6), "end prefill(p1 fail none)"),
            (.body, "body"), (.end(keepAlive: true), "succeed(d1 ok release)"),
        ]),
        Case(name: "PD: the deadline with neither half answered blames the prefill", maxRetries: 0, steps: sentToPair + [
            (.failed(timedOut: true, at: 1000), "fail(upstreamTimeout(prefill); d1 ok none; prefill p1 fail close; exhausted)"),
        ]),
        Case(name: "PD: the prefill's own deadline firing first ends the same way", maxRetries: 0, steps: sentToPair + [
            (.prefillFailed(timedOut: true, at: 1000), "fail(upstreamTimeout(prefill); d1 ok close; prefill p1 fail none; exhausted)"),
        ]),
        Case(name: "PD: the deadline after the prefill answered blames the decode worker", steps: sentToPair + [
            (.prefillEnd(200, keepAlive: true, at: 3), "end prefill(p1 ok release)"),
            (.failed(timedOut: true, at: 1000), "retry(d1 fail none, 50ms)"), (.retryTimer(at: 1050), "select[d1]"),
        ]),
        Case(name: "PD: a decode failure closes the prefill half unblamed", steps: sentToPair + [
            (.failed(timedOut: false, at: 4), "retry(d1 fail none; prefill p1 ok close, 50ms)"),
        ]),
        Case(name: "PD: a retryable decode status closes both halves", steps: sentToPair + [
            (.head(503, at: 4), "retry(d1 fail close; prefill p1 ok close, 50ms)"), (.retryTimer(at: 54), "select[d1]"),
        ]),
        Case(name: "PD: no prefill worker: 503 of the prefill half", steps: [
            (.start, "select[]"), (.noWorker(.noneAvailable, missing: .prefill), "fail(noWorkers(prefill); -)"),
        ]),
        Case(name: "PD: every decode worker overloaded, shedding on: 503 of the decode half", steps: [
            (.start, "select[]"), (.noWorker(.overloaded, missing: .primary), "fail(workersOverloaded(primary); -)"),
        ]),
        Case(name: "PD: the client gone mid-answer closes both halves", admission: true, steps: [
            (.start, "admit"), (.admitted, "select[]"), (.chosen("d1", prefill: "p1", at: 0), "start(d1+p1 until 1000 first)"),
            (.head(200, at: 5), "head"), (.clientClosed, "abandon(d1 ok close; prefill p1 ok close; slot)"),
        ]),
        Case(name: "PD logprobs: the end waits for the prefill's answer", admission: true, mergesPrefill: true, steps: [
            (.start, "admit"), (.admitted, "select[]"), (.chosen("d1", prefill: "p1", at: 0), "start(d1+p1 until 1000 first)"),
            (.head(200, at: 5), "head"), (.end(keepAlive: true), "await prefill(d1 ok release)"),
            (.prefillEnd(200, keepAlive: true, at: 8), "succeed(-; prefill p1 ok release; slot)"),
        ]),
        Case(name: "PD logprobs: a prefill that fails after the decode ended still ends the response", mergesPrefill: true, steps: sentToPair + [
            (.head(200, at: 5), "head"), (.end(keepAlive: true), "await prefill(d1 ok release)"),
            (.prefillFailed(timedOut: false, at: 8), "succeed(-; prefill p1 fail none)"),
        ]),
        Case(name: "PD logprobs: a prefill that answered first does not hold the end", mergesPrefill: true, steps: sentToPair + [
            (.prefillEnd(200, keepAlive: true, at: 3), "end prefill(p1 ok release)"),
            (.head(200, at: 5), "head"), (.end(keepAlive: true), "succeed(d1 ok release)"),
        ]),
        Case(name: "PD logprobs: the client gone while the end waits closes the prefill", mergesPrefill: true, steps: sentToPair + [
            (.head(200, at: 5), "head"), (.end(keepAlive: false), "await prefill(d1 ok close)"),
            (.clientClosed, "abandon(-; prefill p1 ok close)"),
        ]),
    ]

    @Test(arguments: cases) func path(_ c: Case) {
        var m = machine(admission: c.admission, mergesPrefill: c.mergesPrefill, maxRetries: c.maxRetries, retries: c.retries)
        let trace = run(&m, c.steps.map(\.0))
        for (k, (step, got)) in zip(c.steps, trace).enumerated() {
            #expect(got == step.1, "step \(k) (\(step.0)): expected \(step.1), got \(got)")
        }
    }

    /// Random runs through a model of the shell: at each step one of the events a correct shell
    /// could report next (an answer to an outstanding request, a part of a running call's answer,
    /// a due timer, the client leaving), chosen at random, for regular and PD exchanges, with and
    /// without admission and logprob merging. Whatever happens: a granted admission slot is
    /// released exactly once; every half that started ends exactly once, while it runs, and its
    /// connection goes back to the pool only after its answer ended keep-alive; at most one
    /// attempt runs at a time; nothing is retried once the response started; the exchange ends.
    @Test func invariantsHoldForAnyEventOrder() {
        var rng = SplitMix64(seed: 0x5EED)
        for run in 0..<20_000 {
            let admission = run % 2 == 0, pd = run % 3 != 0
            var m = machine(admission: admission, mergesPrefill: pd && run % 5 < 2, maxRetries: Int(rng.next() % 4), seed: rng.next())
            var now: UInt64 = 0
            var granted = 0, released = 0
            var failures: [String] = []
            // The shell's view: what it asked for and what runs.
            var admissionAsked = false, admissionAnswered = false, selecting = false, retryDue = false
            /// A running half: has its head arrived, did its answer end (and keep-alive).
            struct Half { var head = false; var ended = false; var keepAlive = false; var failed = false }
            var primary: Half?, prefill: Half?
            var headForwarded = false
            func settle(_ end: TestMachine.AttemptEnd?, _ half: inout Half?, _ name: String) {
                guard let end else { return }
                guard let h = half else { return failures.append("\(name) ended while not running") }
                if end.connection == .release, !(h.ended && h.keepAlive) { failures.append("\(name) connection pooled before a keep-alive end") }
                if end.connection == .none, !h.failed { failures.append("\(name) connection left open") }
                if end.connection != .none, h.failed { failures.append("\(name) connection of a failed call disposed") }
                half = nil
            }
            func account(_ a: TestMachine.Action) {
                switch a {
                case .requestAdmission: admissionAsked = true
                case .selectWorker: selecting = true
                case .startAttempt(_, let p, _, _):
                    if primary != nil || prefill != nil { failures.append("two attempts at once") }
                    primary = Half()
                    prefill = p == nil ? nil : Half()
                case .forwardHead: headForwarded = true
                case .endPrefill(let e): settle(e, &prefill, "prefill")
                case .awaitPrefill(let e): settle(e, &primary, "primary")
                case .retry(let e, let p, _):
                    if headForwarded { failures.append("retried after the response started") }
                    settle(e, &primary, "primary"); settle(p, &prefill, "prefill")
                    retryDue = true
                case .succeed(let e, let p, let slot):
                    settle(e, &primary, "primary"); settle(p, &prefill, "prefill")
                    if slot { released += 1 }
                case .fail(_, let e, let p, let slot, _, _):
                    settle(e, &primary, "primary"); settle(p, &prefill, "prefill")
                    if slot { released += 1 }
                case .abandon(let e, let p, _, let slot):
                    settle(e, &primary, "primary"); settle(p, &prefill, "prefill")
                    retryDue = false
                    if slot { released += 1 }
                case .releaseSlot: released += 1
                case .none, .stale, .forwardBody: break
                }
            }
            account(m.start())
            for _ in 0..<Int(rng.next() % 40) {
                now += rng.next() % 400
                var events: [Event] = [.clientClosed]
                if admissionAsked, !admissionAnswered { events += [.admitted, .queueFull, .queueTimedOut] }
                if selecting, case .selecting = m.state {
                    let id = "w\(rng.next() % 3)"
                    events += [.chosen(id, prefill: pd ? "p\(rng.next() % 3)" : nil, at: now),
                               .noWorker([.unknownModel, .noneAvailable, .overloaded][Int(rng.next() % 3)], missing: pd && rng.next() % 2 == 0 ? .prefill : .primary)]
                }
                if let h = primary, !h.ended, !h.failed {
                    events += h.head ? [.body, .end(keepAlive: rng.next() % 2 == 0)] : [.head([200, 404, 429, 500, 503][Int(rng.next() % 5)], at: now)]
                    events.append(.failed(timedOut: rng.next() % 2 == 0, at: now))
                }
                if let h = prefill, !h.ended, !h.failed {
                    events += [.prefillEnd([200, 400, 500, 503][Int(rng.next() % 4)], keepAlive: rng.next() % 2 == 0, at: now),
                               .prefillFailed(timedOut: rng.next() % 2 == 0, at: now)]
                }
                if retryDue, case .backingOff(let due) = m.state { events.append(.retryTimer(at: max(now, due))) }
                let event = events.count > 1 && rng.next() % 30 != 0 ? events[1 + Int(rng.next() % UInt64(events.count - 1))] : events[0]
                switch event {
                case .admitted: admissionAnswered = true; granted += 1
                case .queueFull, .queueTimedOut: admissionAnswered = true
                case .chosen, .noWorker: selecting = false
                case .retryTimer: retryDue = false
                case .head: primary?.head = true
                case .end(let k): primary?.ended = true; primary?.keepAlive = k
                case .failed: primary?.failed = true
                case .prefillEnd(_, let k, _): prefill?.ended = true; prefill?.keepAlive = k
                case .prefillFailed: prefill?.failed = true
                default: break
                }
                if case .retryTimer(let t) = event { now = t }
                account(event.apply(to: &m))
            }
            // However it went, the client eventually leaves, a late admission grant is given
            // back, and a prefill read past the response's end ends.
            account(m.clientClosed())
            if admissionAsked, !admissionAnswered {
                granted += 1
                account(m.admission(.admitted))
            }
            if prefill != nil {
                let k = rng.next() % 2 == 0
                prefill!.ended = true; prefill!.keepAlive = k
                account(m.prefillEnded(status: 200, keepAlive: k, now: now))
            }
            if !m.isFinished { failures.append("not finished") }
            if granted != released { failures.append("\(granted) slots granted, \(released) released") }
            if primary != nil || prefill != nil { failures.append("a half never ended") }
            #expect(failures.isEmpty, "run \(run) (admission \(admission), pd \(pd)): \(failures)")
            if !failures.isEmpty { return }
        }
    }
}
