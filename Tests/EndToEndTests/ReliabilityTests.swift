import Foundation
import TestSupport
import Testing

/// Fault injection through real processes: failing, dying, hanging and recovering workers.
@Suite(.serialized) struct ReliabilityTests {
    /// Sends `count` chat requests over `connections` keep-alive connections at once (all sent,
    /// then read) and returns the statuses.
    func burst(_ smg: any RouterUnderTest, count: Int, connections: Int) throws -> [Int] {
        var statuses: [Int] = []
        var remaining = count
        while remaining > 0 {
            let n = min(connections, remaining)
            let conns = try (0..<n).map { _ in try HTTPConnection(port: smg.port) }
            for c in conns {
                try c.send(HTTPConnection.requestBytes(method: "POST", path: "/v1/chat/completions", headers: [],
                                                       body: Array(#"{"messages":[{"role":"user","content":"hi"}]}"#.utf8)))
            }
            for c in conns { statuses.append((try? c.readResponse().status) ?? -1) }
            remaining -= n
        }
        return statuses
    }

    @Test func aWorkerFailingFivePercentCostsClientsNothing() async throws {
        let flaky = try await SimWorkerProcess(name: "flaky", ["--failure-rate", "0.05", "--seed", "7"])
        let good = try await SimWorkerProcess(name: "good")
        // The breaker is off so that the flaky worker keeps getting half the traffic: this is
        // about retries hiding its failures.
        let smg = try await InProcessRouter(["--worker-urls", flaky.url, good.url, "--policy", "round_robin", "--retry-initial-backoff-ms", "1",
                                           "--disable-circuit-breaker"])
        try await waitForModels(smg, count: 2)
        let statuses = try burst(smg, count: 2000, connections: 8)
        let failed = statuses.filter { $0 != 200 }.count
        #expect(Double(failed) / 2000 < 0.001, "\(failed) of 2000 failed")
        let injected = try flaky.stats()["failures_injected"]!
        #expect(injected > 20, "the worker did fail")
        #expect(try smg.metric(#"smg_worker_retries_total{worker_type="regular",endpoint="chat"}"#) == Double(injected))
    }

    @Test func killingAWorkerUnderLoadLosesNoRequest() async throws {
        let doomed = try await SimWorkerProcess(name: "doomed", ["--ttft-ms", "20"])
        let survivor = try await SimWorkerProcess(name: "survivor", ["--ttft-ms", "20"])
        let smg = try await InProcessRouter(["--worker-urls", doomed.url, survivor.url, "--policy", "round_robin", "--retry-initial-backoff-ms", "5"])
        try await waitForModels(smg, count: 2)
        var statuses: [Int] = []
        for round in 0..<12 {
            if round == 4 { doomed.process.signal(SIGKILL) }
            statuses += try burst(smg, count: 16, connections: 16)
        }
        #expect(statuses.count == 192)
        #expect(statuses.allSatisfy { $0 == 200 }, "lost: \(statuses.filter { $0 != 200 })")
        #expect(try survivor.stats()["requests"]! > 100)
    }

    @Test func theBreakerOpensHalfOpensAndClosesAgain() async throws {
        let w = try await SimWorkerProcess(name: "w", ["--failure-rate", "1"])
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin", "--disable-retries",
                                           "--cb-failure-threshold", "3", "--cb-success-threshold", "2", "--cb-timeout-duration-secs", "1"])
        func breaker() throws -> String {
            (try smg.request("GET", "/workers").json()["workers"] as? [[String: Any]])?.first?["circuit_breaker"] as? String ?? "?"
        }
        for _ in 0..<3 { #expect(try smg.chat("x").status == 500) }
        #expect(try breaker() == "open")
        let refused = try smg.chat("x")
        #expect(refused.status == 503, "an open circuit takes no requests")
        #expect(try w.stats()["requests"] == 3)
        #expect(try smg.metric(#"smg_worker_cb_state{worker="\#(w.url)"}"#) == 1)
        // The worker recovers; after the open period one probe goes through, then another.
        try w.setFaults("failure_rate=0")
        try await eventually(timeout: .seconds(5), "the circuit half-opens and lets a probe through") {
            try smg.chat("x").status == 200
        }
        #expect(try breaker() == "half_open")
        #expect(try smg.chat("x").status == 200)
        #expect(try breaker() == "closed")
        #expect(try smg.metric(#"smg_worker_cb_transitions_total{worker="\#(w.url)",from="half_open",to="closed"}"#) == 1)
        // A failed probe opens it again.
        try w.setFaults("failure_rate=1")
        for _ in 0..<3 { _ = try smg.chat("x") }
        #expect(try breaker() == "open")
        try await eventually(timeout: .seconds(5), "a probe is let through again") { try smg.chat("x").status == 500 }
        #expect(try breaker() == "open", "the failed probe re-opened it")
    }

    @Test func aWorkerThatComesBackIsUsedAgain() async throws {
        let port = try freeLoopbackPort()
        var flappy: SimWorkerProcess? = try await SimWorkerProcess(name: "flappy", port: port)
        let steady = try await SimWorkerProcess(name: "steady")
        let smg = try await RouterProcess(["--worker-urls", flappy!.url, steady.url, "--policy", "round_robin",
                                           "--health-check-interval-secs", "1", "--health-failure-threshold", "2", "--health-success-threshold", "2"])
        try await waitForModels(smg, count: 2)
        func health() throws -> String {
            (try smg.request("GET", "/workers").json()["workers"] as? [[String: Any]])?.first { $0["url"] as? String == "http://127.0.0.1:\(port)" }?["health"] as? String ?? "?"
        }
        flappy?.process.stop()
        flappy = nil
        try await eventually(timeout: .seconds(8), "the dead worker is marked unhealthy") { try health() == "unhealthy" }
        #expect(try (0..<4).map { _ in try smg.chat("x").header("x-sim-worker") } == ["steady", "steady", "steady", "steady"])
        flappy = try await SimWorkerProcess(name: "flappy", port: port)
        try await eventually(timeout: .seconds(8), "the worker is healthy again after the success threshold") { try health() == "healthy" }
        #expect(Set(try (0..<4).map { _ in try smg.chat("x").header("x-sim-worker") ?? "" }) == ["flappy", "steady"])
        #expect(smg.process.stderr.contains("worker unhealthy") && smg.process.stderr.contains("worker healthy"))
    }

    @Test func aWorkerDownAtStartUpJoinsOnceItComesUp() async throws {
        let port = try freeLoopbackPort()
        let smg = try await RouterProcess(["--worker-urls", "http://127.0.0.1:\(port)", "--policy", "round_robin",
                                           "--worker-startup-check-interval", "1"], waitForWorkers: false)
        #expect(try smg.request("GET", "/readiness").status == 503)
        #expect(try smg.chat("x").status == 503)
        try await eventually(timeout: .seconds(5), "a progress line names the awaited worker") {
            smg.process.stderr.contains("waiting for workers") && smg.process.stderr.contains("127.0.0.1:\(port)")
        }
        let late = try await SimWorkerProcess(name: "late", port: port)
        try await eventually(timeout: .seconds(8), "the late worker serves") { try smg.chat("x").status == 200 }
        #expect(try late.stats()["requests"]! >= 1)
        try await eventually(timeout: .seconds(3), "start-up is reported done") { smg.process.stderr.contains("start-up workers ready") }
    }
}

@Suite(.serialized) struct AdmissionTests {
    /// Sends `n` requests at once, each on its own connection read by its own thread; returns
    /// (status, seconds until its answer) per request.
    func flood(_ smg: any RouterUnderTest, _ n: Int) throws -> [(status: Int, seconds: Double)] {
        let start = ContinuousClock.now
        let conns = try (0..<n).map { _ in try HTTPConnection(port: smg.port) }
        for c in conns {
            try c.send(HTTPConnection.requestBytes(method: "POST", path: "/v1/chat/completions", headers: [],
                                                   body: Array(#"{"max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"#.utf8)))
        }
        let results = ResultBox(count: n)
        let group = DispatchGroup()
        for (i, c) in conns.enumerated() {
            group.enter()
            let box = UnsafeTransfer(c)
            Thread.detachNewThread {
                let r = try? box.value.readResponse()
                let d = ContinuousClock.now - start
                results.set(i, (r?.status ?? -1, Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18))
                group.leave()
            }
        }
        group.wait()
        return results.values
    }

    func expectGaugesAtZero(_ smg: any RouterUnderTest) async throws {
        try await eventually(timeout: .seconds(5), "in-flight and queue gauges back to zero") {
            try smg.metric("smg_admission_inflight") == 0 && smg.metric("smg_admission_queue_depth") == 0
                && smg.metric("smg_http_requests_active") == 0
        }
    }

    @Test func withoutAQueueExcessRequestsGet429AtOnce() async throws {
        let w = try await SimWorkerProcess(name: "slow", ["--ttft-ms", "600"])
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin", "--max-concurrent-requests", "4", "--queue-size", "0"])
        let results = try flood(smg, 32)
        let ok = results.filter { $0.status == 200 }
        let refused = results.filter { $0.status == 429 }
        #expect(ok.count == 4, "\(results.map(\.status))")
        #expect(refused.count == 28)
        #expect(refused.allSatisfy { $0.seconds < 0.5 }, "refusals are immediate")
        let r = try smg.chat("x")  // after the burst: a slot is free again
        #expect(r.status == 200)
        try await expectGaugesAtZero(smg)
        #expect(try smg.metric(#"smg_router_admission_total{result="rejected_queue_full"}"#) == 28)
        // The refusal is JSON with Retry-After.
        let smg2 = try await InProcessRouter(["--worker-urls", w.url, "--max-concurrent-requests", "1", "--queue-size", "0"])
        let c = try HTTPConnection(port: smg2.port)
        try c.send(HTTPConnection.requestBytes(method: "POST", path: "/generate", headers: [], body: Array(#"{"text":"a"}"#.utf8)))
        try await eventually(timeout: .seconds(5), "the first request holds the only slot") { try smg2.metric("smg_admission_inflight") == 1 }
        let refusal = try smg2.request("POST", "/generate", body: #"{"text":"b"}"#)
        #expect(refusal.status == 429)
        #expect(refusal.errorCode == "rate_limited")
        #expect(refusal.header("retry-after") != nil)
        _ = try c.readResponse()
    }

    @Test func queuedRequestsWaitAndSucceedOrTimeOut() async throws {
        let w = try await SimWorkerProcess(name: "slow", ["--ttft-ms", "300"])
        let patient = try await InProcessRouter(["--worker-urls", w.url, "--max-concurrent-requests", "4", "--queue-size", "64", "--queue-timeout-secs", "30"])
        let all = try flood(patient, 16)
        #expect(all.allSatisfy { $0.status == 200 }, "\(all.map(\.status))")
        #expect(all.map(\.seconds).max()! > 1.0, "they waited their turn (4 waves of 0.3 s)")
        try await expectGaugesAtZero(patient)

        let impatient = try await InProcessRouter(["--worker-urls", w.url, "--max-concurrent-requests", "1", "--queue-size", "64", "--queue-timeout-secs", "1"])
        let some = try flood(impatient, 8)
        #expect(some.filter { $0.status == 200 }.count >= 2)
        #expect(some.filter { $0.status == 408 }.count >= 3, "\(some.map(\.status))")
        try await expectGaugesAtZero(impatient)
    }

    @Test func aRateLimitAdmitsAtTheConfiguredRate() async throws {
        let w = try await SimWorkerProcess(name: "fast")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--rate-limit-tokens-per-second", "20", "--queue-size", "0"])
        var ok = 0, limited = 0
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .seconds(2) {
            let status = try smg.chat("x").status
            if status == 200 { ok += 1 } else if status == 429 { limited += 1 }
        }
        // 20 at once (the bucket starts full) plus 20 per second for 2 s.
        #expect(ok >= 40 && ok <= 64, "admitted \(ok)")
        #expect(limited > 0)
        try await expectGaugesAtZero(smg)
    }
}

@Suite(.serialized) struct WorkerLifecycleTests {
    @Test func apiKeysGuardInferenceAndReachWorkers() async throws {
        let w = try await SimWorkerProcess(name: "w")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--api-key", "sekrit"])
        let denied = try smg.chat("x")
        #expect(denied.status == 401)
        #expect(denied.errorCode == "invalid_api_key")
        #expect(try smg.chat("x", headers: [("authorization", "Bearer wrong")]).status == 401)
        let ok = try smg.chat("x", headers: [("authorization", "Bearer sekrit")])
        #expect(ok.status == 200)
        #expect(ok.header("x-sim-authorization") == "Bearer sekrit")
        #expect(try smg.request("GET", "/health").status == 200, "health is not an inference route")
        // A per-worker key replaces the router's on the way to that worker.
        // With no control-plane credentials configured, --api-key guards the control plane too.
        #expect(try smg.request("GET", "/workers").status == 401)
        let key = [("authorization", "Bearer sekrit")]
        let id = (try smg.request("GET", "/workers", headers: key).json()["workers"] as? [[String: Any]])?.first?["id"] as? String ?? ""
        let patched = try smg.request("PATCH", "/workers/\(id)", body: #"{"api_key":"worker-key","labels":{"zone":"a"}}"#, headers: key)
        #expect(patched.status == 200)
        #expect(try patched.json()["labels"] as? [String: String] == ["zone": "a"])
        #expect(try smg.chat("x", headers: [("authorization", "Bearer sekrit")]).header("x-sim-authorization") == "Bearer worker-key")
    }

    @Test func updatingAWorker() async throws {
        let w = try await SimWorkerProcess(name: "w")
        let smg = try await InProcessRouter(["--worker-urls", w.url])
        let id = (try smg.request("GET", "/workers").json()["workers"] as? [[String: Any]])?.first?["id"] as? String ?? ""
        #expect(try smg.request("PUT", "/workers/\(id)", body: #"{"labels":{"tier":"gold"},"model_id":"renamed"}"#).status == 200)
        let one = try smg.request("GET", "/workers/\(id)").json()
        #expect(one["model_id"] as? String == "renamed")
        #expect(one["labels"] as? [String: String] == ["tier": "gold"])
        #expect(try smg.request("PATCH", "/workers/\(id)", body: #"{"url":"http://elsewhere:1"}"#).status == 400)
        #expect(try smg.request("PATCH", "/workers/\(id)", body: #"{"colour":"blue"}"#).status == 400)
        #expect(try smg.request("PATCH", "/workers/\(id)", body: "nope").status == 400)
        #expect(try smg.request("PATCH", "/workers/nope", body: "{}").status == 404)
        #expect(try smg.chat("x", model: "renamed").status == 200)
    }
}

/// Results written by several threads.
final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [(status: Int, seconds: Double)]
    init(count: Int) { items = Array(repeating: (-1, 0), count: count) }
    func set(_ i: Int, _ v: (Int, Double)) { lock.lock(); items[i] = v; lock.unlock() }
    var values: [(status: Int, seconds: Double)] { lock.lock(); defer { lock.unlock() }; return items }
}

/// Hands a value owned by one test to the single thread that uses it from then on.
struct UnsafeTransfer<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
