import Foundation
import TestSupport
import Testing

/// The router in front of simulated workers: real `smg` and `smg-sim-worker` processes on
/// loopback, real HTTP.
@Suite(.serialized) struct ProxyTests {
    @Test func nonStreamingChatCompletionsAndGenerateGoThroughTheRouter() async throws {
        let w = try await InProcessWorker(name: "a", ["--output-tokens", "3"])
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin"])

        let chat = try smg.chat("hello there", model: "sim-model", headers: [("X-Request-Id", "req-123")])
        #expect(chat.status == 200)
        #expect(chat.header("x-request-id") == "req-123")
        #expect(chat.header("x-upstream-request-id") == "req-123", "the request id is forwarded to the worker")
        // The worker says what it read (characters and FNV-1a of the prompt), so tests can check
        // what reached it: "hello there" is 11 characters.
        #expect(chat.header("x-sim-prompt")?.hasPrefix("11:") == true)
        #expect(try smg.chat("hello there").header("x-sim-prompt") == chat.header("x-sim-prompt"))
        #expect(try smg.chat("hello thera").header("x-sim-prompt") != chat.header("x-sim-prompt"))
        let chatJSON = try chat.json()
        #expect(chatJSON["object"] as? String == "chat.completion")
        let usage = chatJSON["usage"] as? [String: Any]
        #expect(usage?["completion_tokens"] as? Int == 3)

        let completion = try smg.request("POST", "/v1/completions", body: #"{"model":"sim-model","prompt":"once upon a time","max_tokens":2}"#)
        #expect(completion.status == 200)
        #expect(try completion.json()["object"] as? String == "text_completion")

        let generate = try smg.request("POST", "/generate", body: #"{"text":"the capital of France is","sampling_params":{"max_new_tokens":4}}"#)
        #expect(generate.status == 200)
        let meta = try generate.json()["meta_info"] as? [String: Any]
        #expect(meta?["completion_tokens"] as? Int == 4)
        #expect(generate.header("x-request-id")?.hasPrefix("smg-") == true, "a request id is generated when none is sent")

        for (path, body) in [("/v1/embeddings", #"{"input":["a","b"]}"#), ("/v1/rerank", #"{"query":"q","documents":["x","y"]}"#),
                             ("/rerank", #"{"query":"q","documents":["x"]}"#), ("/v1/classify", #"{"input":"great"}"#)] {
            #expect(try smg.request("POST", path, body: body).status == 200, "\(path)")
        }
        for path in ["/get_model_info", "/get_server_info", "/health_generate"] {
            #expect(try smg.request("GET", path).status == 200, "\(path)")
        }
        let models = try smg.request("GET", "/v1/models").json()
        #expect((models["data"] as? [[String: Any]])?.first?["id"] as? String == "sim-model")
    }

    @Test func streamingEventsArriveAtTheWorkersPace() async throws {
        // One event every 200 ms: the client must see them one by one, not in a burst.
        let w = try await InProcessWorker(name: "slow", ["--tokens-per-second", "5", "--output-tokens", "5"])
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin"])
        let c = try HTTPConnection.startStream(port: smg.port, body: #"{"model":"sim-model","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
        let (status, headers, events) = try c.readEvents()
        #expect(status == 200)
        #expect(headers.first { $0.0 == "content-type" }?.1 == "text/event-stream")
        #expect(events.last?.data == "[DONE]")
        let tokens = events.filter { $0.data.contains("\"content\"") }
        #expect(tokens.count == 5)
        // Consecutive token events are ~200 ms apart; buffering would collapse the gaps to ~0.
        // The bound leaves room for a busy 2-core machine delaying one read.
        for (a, b) in zip(tokens, tokens.dropFirst()) {
            let gap = b.at - a.at
            #expect(gap > .milliseconds(60), "events were bunched: gap \(gap)")
        }
        #expect(tokens.last!.at - tokens.first!.at > .milliseconds(600))
    }

    @Test func streamingCompletionsAndGenerate() async throws {
        let w = try await InProcessWorker(name: "s", ["--output-tokens", "4"])
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin"])
        for (path, body) in [("/v1/completions", #"{"prompt":"abc","stream":true}"#), ("/generate", #"{"text":"abc","stream":true}"#)] {
            let c = try HTTPConnection.startStream(port: smg.port, path: path, body: body)
            let (status, _, events) = try c.readEvents()
            #expect(status == 200)
            #expect(events.count >= 5, "\(path): \(events.map(\.data))")
            #expect(events.last?.data == "[DONE]")
        }
    }

    @Test func roundRobinAlternatesBetweenWorkers() async throws {
        let a = try await InProcessWorker(name: "a")
        let b = try await InProcessWorker(name: "b")
        let smg = try await InProcessRouter(["--worker-urls", a.url, b.url, "--policy", "round_robin"])
        try await waitForModels(smg, count: 2)
        let served = try (0..<6).map { _ in try smg.chat("x", model: "sim-model").header("x-sim-worker") ?? "?" }
        #expect(served == ["a", "b", "a", "b", "a", "b"])
    }

    @Test func clientDisconnectMidStreamDropsTheUpstreamConnection() async throws {
        let w = try await InProcessWorker(name: "long", ["--tokens-per-second", "10", "--output-tokens", "200"])
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin"])
        let c = try HTTPConnection.startStream(port: smg.port)
        let (_, _, events) = try c.readEvents(limit: 2)
        #expect(events.count == 2)
        c.close()
        // The worker sees its stream abandoned long before the 20 s generation would end.
        try await eventually(timeout: .seconds(5), "worker notices the abandoned stream") {
            try w.stats()["aborted_streams"] == 1
        }
        try await eventually(timeout: .seconds(5), "router's in-flight gauge returns to zero") {
            try smg.metric("smg_http_requests_active") == 0
        }
        #expect(try smg.metric(#"smg_http_responses_total{path="/v1/chat/completions",status_code="499",error_code="client_closed_request"}"#) == 1)
    }

    @Test func requestTimeoutAnswers504() async throws {
        let w = try await InProcessWorker(name: "hang", ["--hang-rate", "1"])
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin", "--request-timeout-secs", "1", "--disable-retries"])
        let start = ContinuousClock.now
        let r = try smg.chat("x", model: "sim-model")
        #expect(r.status == 504)
        #expect(r.errorCode == "upstream_timeout")
        #expect(r.header("x-smg-error-code") == "upstream_timeout")
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    @Test func upstreamConnectionsAreKeptAlive() async throws {
        let w = try await InProcessWorker(name: "k")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin"])
        try await waitForModels(smg, count: 1)
        let c = try HTTPConnection(port: smg.port)
        for _ in 0..<50 {
            let r = try c.request("POST", "/v1/chat/completions", body: Array(#"{"messages":[{"role":"user","content":"x"}]}"#.utf8))
            #expect(r.status == 200)
        }
        // 50 requests on one client connection reuse pooled worker connections (plus one for model discovery).
        #expect(try smg.metric("smg_worker_connections_opened_total") <= 3)
    }

    @Test func pipelinedRequestsAreAnsweredInOrderAndCountedOnce() async throws {
        let w = try await InProcessWorker(name: "p")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin"])
        let c = try HTTPConnection(port: smg.port)
        let one = HTTPConnection.requestBytes(method: "POST", path: "/generate", headers: [("x-request-id", "r1")], body: Array(#"{"text":"a"}"#.utf8))
        let two = HTTPConnection.requestBytes(method: "GET", path: "/health", headers: [("x-request-id", "r2")], body: nil)
        let three = HTTPConnection.requestBytes(method: "POST", path: "/v1/completions", headers: [("x-request-id", "r3")], body: Array(#"{"prompt":"b"}"#.utf8))
        try c.send(one + two + three)
        let ids = try (0..<3).map { _ in try c.readResponse().header("x-request-id") }
        #expect(ids == ["r1", "r2", "r3"])
        try await eventually(timeout: .seconds(5), "every pipelined request recorded and none left in flight") {
            try smg.metric("smg_http_requests_active") == 0
                && smg.metric(#"smg_http_requests_total{method="POST",path="/generate"}"#) == 1
                && smg.metric(#"smg_http_requests_total{method="GET",path="/health"}"#) == 1
                && smg.metric(#"smg_http_requests_total{method="POST",path="/v1/completions"}"#) == 1
        }
    }

    @Test func workerDroppingTheConnectionGives502() async throws {
        let w = try await InProcessWorker(name: "drop", ["--drop-rate", "1"])
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin"])
        let r = try smg.chat("x")
        #expect(r.status == 502)
        #expect(r.errorCode == "upstream_error")
        #expect((try r.json()["error"] as? [String: Any])?["type"] as? String == "bad_gateway")
        #expect(try smg.request("GET", "/health").status == 200)
    }
}

/// Waits until the router knows every worker's model and has seen it healthy (discovery and
/// the first health check run right after a worker is added).
func waitForModels(_ smg: any RouterUnderTest, count: Int) async throws {
    try await eventually(timeout: .seconds(10), "\(count) healthy workers with a known model") {
        let workers = try smg.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
        return workers.filter { $0["model_id"] is String && $0["health"] as? String == "healthy" }.count == count
    }
}
