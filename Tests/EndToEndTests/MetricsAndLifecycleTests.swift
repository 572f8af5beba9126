import Foundation
import TestSupport
import Testing

@Suite(.serialized) struct MetricsAndLifecycleTests {
    @Test func metricsCountWhatWasSent() async throws {
        let a = try await SimWorkerProcess(name: "a")
        let b = try await SimWorkerProcess(name: "b")
        let smg = try await RouterProcess(["--worker-urls", a.url, b.url, "--policy", "round_robin"])
        try await waitForModels(smg, count: 2)
        for _ in 0..<7 { #expect(try smg.chat("x", model: "sim-model").status == 200) }
        for _ in 0..<2 { #expect(try smg.chat("x", model: "sim-model", stream: true).status == 200) }
        #expect(try smg.chat("x", model: "nope").status == 404)
        #expect(try smg.request("POST", "/generate", body: #"{"text":"t"}"#).status == 200)

        #expect(try smg.metric(#"smg_http_requests_total{method="POST",path="/v1/chat/completions"}"#) == 10)
        #expect(try smg.metric(#"smg_http_requests_total{method="POST",path="/generate"}"#) == 1)
        #expect(try smg.metric(#"smg_router_requests_total{router_type="http",backend_type="regular",connection_mode="http",model="sim-model",endpoint="chat",streaming="false"}"#) == 7)
        #expect(try smg.metric(#"smg_router_requests_total{router_type="http",backend_type="regular",connection_mode="http",model="sim-model",endpoint="chat",streaming="true"}"#) == 2)
        #expect(try smg.metric(#"smg_router_request_errors_total{router_type="http",backend_type="regular",connection_mode="http",model="other",endpoint="chat",error_type="model_not_found"}"#) == 1)
        #expect(try smg.metric(#"smg_http_responses_total{path="/v1/chat/completions",status_code="404",error_code="model_not_found"}"#) == 1)
        #expect(try smg.metric(#"smg_router_requests_total{router_type="http",backend_type="regular",connection_mode="http",model="unknown",endpoint="generate",streaming="false"}"#) == 1)
        #expect(try smg.metric(#"smg_worker_requests_total{worker="\#(a.url)",model="sim-model"}"#) + smg.metric(#"smg_worker_requests_total{worker="\#(b.url)",model="sim-model"}"#) == 10)
        #expect(try smg.metric(#"smg_http_request_duration_seconds_count{method="POST",path="/v1/chat/completions"}"#) == 10)
        #expect(try smg.metric(#"smg_worker_pool_size{worker_type="regular",connection_mode="http",model="sim-model"}"#) == 2)
        #expect(try smg.metric(#"smg_router_request_duration_seconds_count{router_type="http",backend_type="regular",connection_mode="http",model="sim-model",endpoint="chat"}"#) == 9)
        #expect(try smg.metric(#"smg_router_upstream_responses_total{router_type="http",status_code="200",error_code=""}"#) == 10)
        #expect(try smg.metric(#"smg_worker_selection_total{worker_type="regular",connection_mode="http",model="sim-model",policy="round_robin"}"#) == 9)
        #expect(try smg.metric(#"smg_worker_requests_active{worker="\#(a.url)"}"#) == 0)
        #expect(try smg.metric("smg_http_requests_active") == 0)
    }

    @Test func sigtermLetsAStreamInFlightFinish() async throws {
        let a = try await SimWorkerProcess(name: "a", ["--tokens-per-second", "10", "--output-tokens", "30"])
        let smg = try await RouterProcess(["--worker-urls", a.url, "--policy", "round_robin", "--shutdown-grace-period-secs", "20"])
        let idle = try HTTPConnection(port: smg.port)
        #expect(try idle.request("GET", "/readiness").status == 200)
        let c = try HTTPConnection.startStream(port: smg.port)
        let (status, headers) = try c.readHead()
        #expect(status == 200)
        smg.process.signal(SIGTERM)
        // Once the router says it is draining, readiness answers 503 (asked on a connection
        // opened before the signal: the listener is closed by then).
        try await eventually(timeout: .seconds(5), "the router logs that it is draining") { smg.process.stderr.contains("shutting down") }
        let readiness = try idle.request("GET", "/readiness")
        #expect(readiness.status == 503)
        #expect(readiness.header("connection") == "close", "draining connections are not kept alive")
        let body = String(decoding: try c.readBody(headers), as: UTF8.self)
        #expect(body.hasSuffix("data: [DONE]\n\n"), "the stream finished")
        #expect(body.components(separatedBy: "\"content\"").count - 1 == 30, "every token of the 3 s stream arrived")
        #expect(await smg.process.waitForExit(timeout: .seconds(15)) == 0)
        #expect(throws: (any Error).self) { try HTTPConnection(port: smg.port).request("GET", "/health") }
    }

    @Test func sigtermWithNothingInFlightExitsAtOnce() async throws {
        let smg = try await RouterProcess(["--policy", "round_robin"])
        let start = ContinuousClock.now
        smg.process.signal(SIGINT)
        #expect(await smg.process.waitForExit(timeout: .seconds(10)) == 0)
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    @Test func corsHeadersFollowTheAllowedOrigins() async throws {
        let smg = try await RouterProcess(["--policy", "round_robin", "--cors-allowed-origins", "http://ok.example"])
        let allowed = try smg.request("GET", "/health", headers: [("origin", "http://ok.example")])
        #expect(allowed.header("access-control-allow-origin") == "http://ok.example")
        let denied = try smg.request("GET", "/health", headers: [("origin", "http://evil.example")])
        #expect(denied.header("access-control-allow-origin") == nil)
        let preflight = try smg.request("OPTIONS", "/v1/chat/completions", headers: [("origin", "http://ok.example"), ("access-control-request-method", "POST")])
        #expect(preflight.status == 204)
        #expect(preflight.header("access-control-allow-methods")?.contains("POST") == true)
    }

    @Test func customRequestIDHeaders() async throws {
        let smg = try await RouterProcess(["--policy", "round_robin", "--request-id-headers", "x-trace-id"])
        #expect(try smg.request("GET", "/health", headers: [("x-trace-id", "trace-9")]).header("x-request-id") == "trace-9")
        #expect(try smg.request("GET", "/health", headers: [("x-request-id", "ignored")]).header("x-request-id") != "ignored")
    }
}

/// The command line as an operator meets it.
@Suite struct CommandLineTests {
    func run(_ args: [String], environment: [String: String] = [:]) async throws -> (Int32, String, String) {
        let p = try TestProcess(Binaries.smg, args, name: "smg", environment: environment)
        guard let status = await p.waitForExit(timeout: .seconds(20)) else { throw TestFailure("smg \(args) did not exit") }
        return (status, p.stdout, p.stderr)
    }

    @Test func flagsWhoseFeatureIsNotBuiltStopStartUpNamingTheFlag() async throws {
        let (status, _, err) = try await run(["--port", "0", "--prometheus-port", "0", "--enable-mesh", "--mesh-port", "0"])
        #expect(status == 2)
        #expect(err.contains("--mesh-port"))
        let (s2, _, e2) = try await run(["--port", "0"], environment: ["ATP_DSN": "db.example:1521/orcl"])
        #expect(s2 == 2)
        #expect(e2.contains("--oracle-dsn"))
        let (s3, _, e3) = try await run(["--port", "0", "--tokenizer-path", "/tmp"])
        #expect(s3 == 2)
        #expect(e3.contains("--tokenizer-path"))
    }

    @Test func badValuesAreClearErrors() async throws {
        let (s1, _, e1) = try await run(["--port", "seventy"])
        #expect(s1 == 2)
        #expect(e1.contains("--port"))
        let (s2, _, e2) = try await run(["--no-such-flag"])
        #expect(s2 == 2)
        #expect(e2.contains("--no-such-flag"))
        let (s3, _, e3) = try await run(["--worker-urls", "http://a:99999"])
        #expect(s3 == 2)
        #expect(e3.contains("--worker-urls"))
    }

    @Test func helpListsEveryFlag() async throws {
        let (status, out, _) = try await run(["--help"])
        #expect(status == 0)
        for flag in ["--worker-urls", "--policy", "--max-payload-size", "--enable-mesh", "--redis-url", "--cb-failure-threshold"] {
            #expect(out.contains(flag))
        }
        let (s2, o2, _) = try await run(["launch", "--help"])
        #expect(s2 == 0 && o2.contains("USAGE"))
    }

    @Test func configFileAndEnvironmentFeedTheRouter() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smg-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("smg.yaml")
        try "policy: round_robin\nhost: 127.0.0.1\nport: 0\nprometheus_port: 0\nprometheus-host: 127.0.0.1\nmax_payload_size: 64\n".write(to: file, atomically: true, encoding: .utf8)
        let p = try TestProcess(Binaries.smg, ["--config", file.path], name: "smg", environment: ["SMG_REQUEST_ID_HEADERS": "x-env-id"])
        defer { p.stop() }
        let line = try await p.waitForLine(containing: "smg ready:")
        let port = Int(line.split(separator: " ")[2].split(separator: ":").last!)!
        let r = try HTTPClient.request(port: port, method: "POST", path: "/generate", headers: [("x-env-id", "from-env")], body: Array(String(repeating: "x", count: 100).utf8))
        #expect(r.status == 413, "max_payload_size came from the file")
        #expect(r.header("x-request-id") == "from-env", "request-id headers came from the environment")
    }
}
