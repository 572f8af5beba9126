import Dispatch
import Foundation
import Synchronization
import TestSupport
import Testing

/// `--upstream-http2`: a worker that answers HTTP/2 when it is registered (h2c by prior
/// knowledge, ALPN h2 over TLS) gets every call as a stream on one connection per router loop;
/// one that does not, or stops, is called over HTTP/1.1 with no request lost. The in-process
/// router runs one event loop, so "one connection per loop" is one connection.
@Suite(.serialized) struct UpstreamHTTP2Tests {
    /// Registration asks at once; margin for a busy 2-core machine.
    static let negotiated = Duration.seconds(10)

    /// Runs `body` `n` times at once, each on a thread of its own (the test client blocks), and
    /// returns what each returned, in order.
    static func together<T: Sendable>(_ n: Int, _ body: @escaping @Sendable (Int) -> T) -> [T] {
        let results = Mutex<[Int: T]>([:])
        let group = DispatchGroup()
        for i in 0..<n {
            group.enter()
            Thread {
                let r = body(i)
                results.withLock { $0[i] = r }
                group.leave()
            }.start()
        }
        group.wait()
        return results.withLock { r in (0..<n).map { r[$0]! } }
    }

    func protocolShown(_ smg: some RouterUnderTest, _ url: String) throws -> String? {
        let workers = try smg.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
        return workers.first { $0["url"] as? String == url }?["protocol"] as? String
    }

    @Test func sixtyFourRequestsAtOnceAreStreamsOnOneConnection() async throws {
        let h2 = try await InProcessWorker(name: "h2", ["--http2", "--ttft-ms", "400"])
        // Idle connections are kept: the connection opened to ask is the one that carries them.
        let smg = try await InProcessRouter(["--worker-urls", h2.url, "--upstream-http2", "--upstream-pool-idle-timeout-secs", "0"])
        try await eventually(timeout: Self.negotiated, "the worker answered HTTP/2") {
            try smg.metric(#"smg_worker_http2{worker="\#(h2.url)"}"#) == 1
        }
        #expect(try protocolShown(smg, h2.url) == "http2")
        let answers = Self.together(64) { i -> String in
            guard let a = try? smg.chat("request \(i)", stream: i % 2 == 0) else { return "no answer" }
            let whole = i % 2 == 0 ? a.text.contains("data: [DONE]") : a.text.contains("chat.completion")
            return a.status == 200 && whole ? "ok" : "\(a.status) \(a.text.prefix(200))"
        }
        #expect(answers.allSatisfy { $0 == "ok" }, "\(answers.filter { $0 != "ok" }.prefix(3))")
        let s = try h2.stats()
        #expect(s["requests"] == 64)
        #expect(s["peak_active"]! >= 16, "they were in flight together: \(s)")
        #expect(s["http2_connections"] == 1, "one connection carried them all: \(s)")
        #expect(s["http2_streams"]! >= 64)
        #expect(s["open_http2_connections"] == 1)
    }

    @Test func oneConnectionCarriesHundredsOfRequestsOneAfterAnother() async throws {
        // Each finished stream closes by itself; resetting it anyway is what a "rapid reset"
        // attacker does, and the worker (swift-nio-http2's defaults: 200 resets in 30 s) would
        // close the connection under every stream on it.
        let h2 = try await InProcessWorker(name: "h2", ["--http2"])
        let smg = try await InProcessRouter(["--worker-urls", h2.url, "--upstream-http2", "--upstream-pool-idle-timeout-secs", "0"])
        try await eventually(timeout: Self.negotiated, "the worker answered HTTP/2") { try protocolShown(smg, h2.url) == "http2" }
        for i in 0..<300 {
            let a = try smg.chat("request \(i)", stream: i % 2 == 0)
            try #require(a.status == 200, "request \(i): \(a.status) \(a.text.prefix(200))")
        }
        let s = try h2.stats()
        #expect(s["http2_connections"] == 1, "the connection lived through them all: \(s)")
        #expect(s["aborted_streams"] == 0, "\(s)")
    }

    @Test func aWorkerWithoutHTTP2IsCalledOverHTTP1BesideOneWithIt() async throws {
        let h2 = try await InProcessWorker(name: "h2", ["--http2"])
        let h1 = try await InProcessWorker(name: "h1")
        let smg = try await InProcessRouter(["--worker-urls", h2.url, h1.url, "--upstream-http2", "--policy", "round_robin"])
        try await eventually(timeout: Self.negotiated, "both asked") {
            try protocolShown(smg, h2.url) == "http2" && smg.metrics().contains(#"smg_worker_http2{worker="\#(h1.url)"} 0"#)
        }
        #expect(try protocolShown(smg, h1.url) == "http1.1")
        var served: [String: Int] = [:]
        for i in 0..<8 {
            let a = try smg.chat("request \(i)", stream: i % 2 == 0)
            #expect(a.status == 200)
            served[a.header("x-sim-worker") ?? "?", default: 0] += 1
        }
        #expect(served == ["h1": 4, "h2": 4])
        #expect(try h1.stats()["http2_streams"] == 0)
        #expect(try h2.stats()["http2_streams"]! >= 4)
    }

    @Test func withoutTheFlagNothingIsAskedAndTheGaugeSaysHTTP1() async throws {
        let h2 = try await InProcessWorker(name: "h2", ["--http2"])
        let smg = try await InProcessRouter(["--worker-urls", h2.url])
        #expect(try smg.chat("x").status == 200)
        #expect(try h2.stats()["http2_connections"] == 0)
        #expect(try smg.metrics().contains(#"smg_worker_http2{worker="\#(h2.url)"} 0"#))
        #expect(try protocolShown(smg, h2.url) == "http1.1")
    }

    @Test func aWorkerRestartedWithoutHTTP2IsCalledOverHTTP1WithNoRequestLost() async throws {
        // A process, so that a kill takes its connections with it.
        let first = try await SimWorkerProcess(name: "first", ["--http2"])
        let smg = try await InProcessRouter(["--worker-urls", first.url, "--upstream-http2", "--upstream-pool-idle-timeout-secs", "0",
                                             "--retry-max-retries", "0"])
        try await eventually(timeout: Self.negotiated, "the worker answered HTTP/2") { try protocolShown(smg, first.url) == "http2" }
        #expect(try smg.chat("before").header("x-sim-worker") == "first")
        first.process.signal(SIGKILL)
        _ = await first.process.waitForExit(timeout: .seconds(10))
        let second = try await SimWorkerProcess(name: "second", port: first.port)
        // The dead connection is dropped; the new one is refused HTTP/2 and the call goes over
        // HTTP/1.1, with no retry needed (retries are off).
        let after = try smg.chat("after")
        #expect(after.status == 200, "\(after.text)")
        #expect(after.header("x-sim-worker") == "second")
        #expect(try protocolShown(smg, first.url) == "http1.1")
        #expect(try smg.metrics().contains(#"smg_worker_http2{worker="\#(first.url)"} 0"#))
        for i in 0..<4 { #expect(try smg.chat("again \(i)", stream: true).status == 200) }
        #expect(try second.stats()["http2_connections"] == 0)
    }

    @Test func streamsPastTheWorkersLimitOpenAnotherConnection() async throws {
        let h2 = try await InProcessWorker(name: "h2", ["--http2", "--http2-max-streams", "4", "--ttft-ms", "400"])
        let smg = try await InProcessRouter(["--worker-urls", h2.url, "--upstream-http2", "--upstream-pool-idle-timeout-secs", "0"])
        try await eventually(timeout: Self.negotiated, "the worker answered HTTP/2") { try protocolShown(smg, h2.url) == "http2" }
        let statuses = Self.together(12) { i in (try? smg.chat("request \(i)").status) ?? 0 }
        #expect(statuses.allSatisfy { $0 == 200 }, "\(statuses)")
        let s = try h2.stats()
        #expect(s["requests"] == 12)
        // Four streams each: at least three connections, and not one per request.
        #expect((3...6).contains(s["http2_connections"]!), "\(s)")
    }

    @Test func aWorkerThatTakesNoStreamsIsCalledOverHTTP1() async throws {
        // SETTINGS_MAX_CONCURRENT_STREAMS 0: a stream opened anyway would wait for ever.
        let none = try await InProcessWorker(name: "none", ["--http2", "--http2-max-streams", "0"])
        // Idle connections are kept: the asking connection closes only if the router refused it.
        let smg = try await InProcessRouter(["--worker-urls", none.url, "--upstream-http2", "--request-timeout-secs", "5",
                                             "--upstream-pool-idle-timeout-secs", "0"])
        try await eventually(timeout: Self.negotiated, "the worker was asked, and the connection given up") {
            let s = try none.stats()
            return s["http2_connections"]! >= 1 && s["open_http2_connections"] == 0
        }
        #expect(try protocolShown(smg, none.url) == "http1.1")
        #expect(try smg.chat("x").status == 200)
        #expect(try none.stats()["http2_streams"] == 0)
    }

    @Test func streamsAWorkerResetsAreRetriedAndBreakNothingElse() async throws {
        // A dropped request is a reset stream under HTTP/2: the connection and its other streams live on.
        let flaky = try await InProcessWorker(name: "flaky", ["--http2", "--drop-rate", "0.3", "--seed", "7", "--ttft-ms", "100"])
        let smg = try await InProcessRouter(["--worker-urls", flaky.url, "--upstream-http2", "--upstream-pool-idle-timeout-secs", "0",
                                             "--retry-max-retries", "5", "--retry-initial-backoff-ms", "1", "--cb-failure-threshold", "1000"])
        try await eventually(timeout: Self.negotiated, "the worker answered HTTP/2") { try protocolShown(smg, flaky.url) == "http2" }
        let statuses = Self.together(24) { i in (try? smg.chat("request \(i)").status) ?? 0 }
        #expect(statuses.allSatisfy { $0 == 200 }, "\(statuses)")
        let s = try flaky.stats()
        #expect(s["failures_injected"]! > 0, "some streams were reset: \(s)")
        #expect(s["http2_connections"] == 1, "resets end streams, not the connection: \(s)")
    }

    @Test func anHTTPSWorkerIsAskedThroughALPN() async throws {
        let pki = try TestPKI("h2-alpn")
        let cert = try pki.issue("worker")
        let tls = ["--tls-cert", cert.certificatePath, "--tls-key", cert.keyPath]
        let h2 = try await InProcessWorker(name: "tls-h2", tls + ["--http2"])
        let h1 = try await InProcessWorker(name: "tls-h1", tls)
        let smg = try await InProcessRouter(["--worker-urls", h2.url, h1.url, "--upstream-http2", "--ca-cert-paths", pki.caPath, "--policy", "round_robin"])
        try await eventually(timeout: Self.negotiated, "both asked") {
            try protocolShown(smg, h2.url) == "http2" && smg.metrics().contains(#"smg_worker_http2{worker="\#(h1.url)"} 0"#)
        }
        var served: [String: Int] = [:]
        for i in 0..<8 {
            let a = try smg.chat("request \(i)", stream: i % 2 == 0)
            #expect(a.status == 200)
            served[a.header("x-sim-worker") ?? "?", default: 0] += 1
        }
        #expect(served == ["tls-h1": 4, "tls-h2": 4])
        func stats(_ w: InProcessWorker) async throws -> [String: Int] {
            let r = try await TLSClient.request(port: w.port, caPath: pki.caPath, path: "/sim/stats")
            return (try JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Int]) ?? [:]
        }
        #expect(try await stats(h2)["http2_streams"]! >= 4)
        #expect(try await stats(h1)["http2_connections"] == 0)
    }

    @Test func garbageOnAnHTTP2ConnectionCostsTheRequestAndNeverTheRouter() async throws {
        // The worker writes garbage under its HTTP/2 framing: the connection is broken for
        // every stream on it; each attempt fails at once, and the client gets 502, not a hang.
        let bad = try await InProcessWorker(name: "bad", ["--http2", "--misbehave", "garbage"])
        let smg = try await InProcessRouter(["--worker-urls", bad.url, "--upstream-http2", "--retry-max-retries", "1",
                                             "--retry-initial-backoff-ms", "1", "--request-timeout-secs", "20"])
        try await eventually(timeout: Self.negotiated, "the worker answered HTTP/2") { try protocolShown(smg, bad.url) == "http2" }
        for stream in [false, true] {
            let started = ContinuousClock.now
            let a = try smg.chat("x", stream: stream)
            #expect(a.status == 502, "stream=\(stream): \(a.status) \(a.text.prefix(200))")
            #expect(ContinuousClock.now - started < .seconds(10), "failed at once, not at the request timeout")
        }
        #expect(try bad.stats()["http2_connections"]! >= 2, "each broken connection was replaced")
        #expect(try smg.request("GET", "/health").status == 200)
    }

    @Test func prefillAndDecodeHalvesAreStreamsToo() async throws {
        let prefill = try await InProcessWorker(name: "p0", ["--role", "prefill", "--bootstrap-port", "0", "--http2"])
        let decode = try await InProcessWorker(name: "d0", ["--role", "decode", "--http2"])
        let smg = try await InProcessRouter(["--pd-disaggregation", "--prefill", prefill.url, String(prefill.bootstrapPort!),
                                             "--decode", decode.url, "--upstream-http2"])
        try await eventually(timeout: Self.negotiated, "both halves answered HTTP/2") {
            try protocolShown(smg, prefill.url) == "http2" && protocolShown(smg, decode.url) == "http2"
        }
        let before = (try prefill.stats()["http2_streams"]!, try decode.stats()["http2_streams"]!)
        for stream in [false, true] {
            let a = try smg.chat("hello", stream: stream)
            #expect(a.status == 200, "\(a.text.prefix(200))")
            #expect(a.header("x-sim-worker") == "d0")
        }
        let g = try smg.request("POST", "/generate", body: #"{"text":"hello","sampling_params":{"max_new_tokens":4}}"#)
        #expect(g.status == 200, "\(g.text.prefix(200))")
        #expect(try prefill.stats()["http2_streams"]! - before.0 >= 3)
        #expect(try decode.stats()["http2_streams"]! - before.1 >= 3)
    }
}
