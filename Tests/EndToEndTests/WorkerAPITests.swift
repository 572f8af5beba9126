import Foundation
import TestSupport
import Testing

/// Adding and removing workers at run time, through `/workers` and the legacy forms.
@Suite(.serialized) struct WorkerAPITests {
    @Test func workersAPIAddsAndRemovesWorkersFromRouting() async throws {
        let a = try await InProcessWorker(name: "a")
        let b = try await InProcessWorker(name: "b")
        let smg = try await InProcessRouter(["--worker-urls", a.url, "--policy", "round_robin"])
        try await waitForModels(smg, count: 1)
        #expect(try (0..<3).map { _ in try smg.chat("x").header("x-sim-worker") } == ["a", "a", "a"])

        let added = try smg.request("POST", "/workers", body: #"{"url":"\#(b.url)"}"#)
        #expect(added.status == 202)
        let id = try added.json()["id"] as? String ?? ""
        #expect(added.header("location") == "/workers/\(id)")
        #expect(try smg.request("POST", "/workers", body: #"{"url":"\#(b.url)"}"#).status == 409)
        #expect(try smg.request("POST", "/workers", body: #"{"url":"ftp://nope"}"#).status == 400)
        #expect(try smg.request("POST", "/workers", body: "not json").status == 400)
        try await waitForModels(smg, count: 2)
        let mixed = Set(try (0..<4).map { _ in try smg.chat("x", model: "sim-model").header("x-sim-worker") ?? "" })
        #expect(mixed == ["a", "b"])

        let one = try smg.request("GET", "/workers/\(id)").json()
        #expect(one["url"] as? String == b.url)
        let list = try smg.request("GET", "/workers").json()
        #expect(list["total"] as? Int == 2)

        let aID = (list["workers"] as? [[String: Any]])?.first { $0["url"] as? String == a.url }?["id"] as? String ?? ""
        #expect(try smg.request("DELETE", "/workers/\(aID)").status == 202)
        #expect(try smg.request("DELETE", "/workers/\(aID)").status == 404)
        #expect(try smg.request("GET", "/workers/\(aID)").status == 404)
        #expect(try (0..<3).map { _ in try smg.chat("x").header("x-sim-worker") } == ["b", "b", "b"])
    }

    /// An idle router's health checks and model discovery sleep (up to a minute) instead of
    /// polling every second; a worker added to it wakes them: checked and its model learned
    /// within a couple of seconds, not at the next minute.
    @Test func aWorkerAddedToAnIdleRouterIsCheckedAtOnce() async throws {
        let w = try await InProcessWorker(name: "w")
        let smg = try await InProcessRouter(["--policy", "round_robin"])
        try await Task.sleep(for: .milliseconds(1500))  // past every task's first ticks: asleep now
        let started = ContinuousClock.now
        #expect(try smg.request("POST", "/workers", body: #"{"url":"\#(w.url)"}"#).status == 202)
        try await eventually(timeout: .seconds(5), "the added worker healthy with its model") {
            let workers = try smg.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
            return workers.first?["health"] as? String == "healthy" && workers.first?["model_id"] as? String == "sim-model"
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(try smg.chat("x").status == 200)
    }

    @Test func legacyAddRemoveAndListWorkers() async throws {
        let a = try await InProcessWorker(name: "a")
        let b = try await InProcessWorker(name: "b")
        let smg = try await InProcessRouter(["--policy", "round_robin"])
        #expect(try smg.chat("x").status == 503)

        #expect(try smg.request("POST", "/add_worker?url=\(a.url)").status == 200)
        #expect(try smg.request("POST", "/add_worker?url=\(b.url)").status == 200)
        #expect(try smg.request("POST", "/add_worker").status == 400)
        let urls = try smg.request("GET", "/list_workers").json()["urls"] as? [String]
        #expect(urls == [a.url, b.url])
        try await waitForModels(smg, count: 2)
        #expect(Set(try (0..<4).map { _ in try smg.chat("x").header("x-sim-worker") ?? "" }) == ["a", "b"])

        #expect(try smg.request("POST", "/remove_worker?url=\(a.url)").status == 200)
        #expect(try smg.request("POST", "/remove_worker?url=\(a.url)").status == 404)
        #expect(try (0..<3).map { _ in try smg.chat("x").header("x-sim-worker") } == ["b", "b", "b"])
        #expect(try smg.request("GET", "/list_workers").json()["urls"] as? [String] == [b.url])
    }

    @Test func removingAWorkerLetsItsInFlightStreamFinish() async throws {
        let a = try await InProcessWorker(name: "a", ["--tokens-per-second", "10", "--output-tokens", "8"])
        let smg = try await InProcessRouter(["--worker-urls", a.url, "--policy", "round_robin"])
        let c = try HTTPConnection.startStream(port: smg.port)
        let (_, headers) = try c.readHead()
        #expect(try smg.request("POST", "/remove_worker?url=\(a.url)").status == 200)
        let body = String(decoding: try c.readBody(headers), as: UTF8.self)
        #expect(body.hasSuffix("data: [DONE]\n\n"))
        #expect(try smg.chat("x").status == 503)
    }

    @Test func fanOutLoadsAndFlushCache() async throws {
        let a = try await SimWorkerProcess(name: "a")
        let b = try await SimWorkerProcess(name: "b")
        let smg = try await InProcessRouter(["--worker-urls", a.url, b.url, "--policy", "round_robin"])
        let loads = try smg.request("GET", "/get_loads").json()["workers"] as? [[String: Any]]
        #expect(loads?.count == 2)
        let flush = try smg.request("POST", "/flush_cache")
        #expect(flush.status == 200)
        #expect(try flush.json()["flushed"] as? Int == 2)
        b.process.stop()
        #expect(try smg.request("POST", "/flush_cache").status == 206, "partial failure")
    }
    /// A control-path call that meets a pooled connection the worker dropped is sent once more
    /// on a fresh connection, as an inference attempt is: before, `/get_loads` reported the
    /// worker as failed (load -1) whenever it drew such a connection.
    @Test func aFetchOnADroppedPooledConnectionIsSentAgainOnAFreshOne() async throws {
        let worker = try await RecordingWorker(dropsReusedConnections: true)
        // No load polls either: only the fan-outs' requests may reach the worker.
        let smg = try await InProcessRouter(["--worker-urls", worker.url, "--disable-health-check", "--disable-load-monitoring",
                                             "--disable-worker-overload-protection"])
        func load() throws -> Int? { ((try smg.request("GET", "/get_loads").json()["workers"] as? [[String: Any]])?.first?["load"] as? Int) }
        for round in 1...3 {
            #expect(try load() == 3, "round \(round)")
        }
        // Rounds 2 and 3 (and 1, when model discovery left a connection in the pool) met a
        // dropped connection: their request went twice, the second time on a new connection.
        let loads = worker.requests(to: "/get_load").count
        #expect(loads >= 5 && worker.connections == worker.received.count - (loads - 3),
                "\(worker.received.map(\.uri)), \(worker.connections) connections")
    }

    /// An inference attempt that meets such a connection is sent again on a fresh one too, by
    /// the same `UpstreamCall`: no retry is counted and the worker's breaker hears of no failure.
    @Test func anAttemptOnADroppedPooledConnectionIsSentAgainWithoutARetry() async throws {
        let worker = try await RecordingWorker(dropsReusedConnections: true)
        let smg = try await InProcessRouter(["--worker-urls", worker.url, "--disable-health-check", "--cb-failure-threshold", "1"])
        for round in 1...4 {
            let answer = try smg.chat("round \(round)", model: "m")
            #expect(answer.status == 200, "round \(round): \(answer.status) \(answer.text)")
        }
        let chats = worker.requests(to: "/v1/chat/completions").count
        #expect(chats >= 7, "rounds 2 to 4 each went twice: \(worker.received.map(\.uri))")
        #expect(try smg.metric(#"smg_worker_retries_total{worker_type="regular",endpoint="chat"}"#) == 0)
        let breaker = (try smg.request("GET", "/workers").json()["workers"] as? [[String: Any]])?.first?["circuit_breaker"] as? String
        #expect(breaker == "closed")
    }
}
