import Foundation
import TestSupport
import Testing

/// What bad requests and missing workers get: JSON errors in the gateway's shape, never a crash.
@Suite(.serialized) struct ErrorTests {
    @Test func oversizedBodiesGet413BeforeTheyAreRead() async throws {
        let w = try await InProcessWorker(name: "a")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin", "--max-payload-size", "1000"])

        // Announced by Content-Length: refused from the head alone; we never send the body.
        let c = try HTTPConnection(port: smg.port)
        try c.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 50000000\r\n\r\n")
        let r = try c.readResponse()
        #expect(r.status == 413)
        #expect(r.errorCode == "payload_too_large")
        #expect(r.header("x-smg-error-code") == "payload_too_large")

        // Chunked, with no length up front: refused once the limit is crossed.
        let d = try HTTPConnection(port: smg.port)
        try d.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        let chunk = String(repeating: "a", count: 600)
        try d.send("258\r\n\(chunk)\r\n258\r\n\(chunk)\r\n")
        #expect(try d.readResponse().status == 413)

        // Under the limit still works.
        #expect(try smg.chat("small", model: "sim-model").status == 200)
        #expect(try w.stats()["requests"] == 1, "the refused bodies never reached the worker")
    }

    /// What a stranger may send without credentials is tiny (health probes and preflights used
    /// to accept 512 MiB), and what the router parses itself (Responses, Conversations) has its
    /// own bound below what it only forwards; each 413 names the limit that applies.
    @Test func eachKindOfRouteHasItsOwnBodyLimit() async throws {
        let w = try await InProcessWorker(name: "a")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin", "--api-key", "k",
                                           "--max-responses-payload-size", "400000"])
        for (method, path) in [("GET", "/health"), ("GET", "/liveness"), ("GET", "/readiness"), ("OPTIONS", "/v1/chat/completions")] {
            let c = try HTTPConnection(port: smg.port)
            try c.send("\(method) \(path) HTTP/1.1\r\nhost: x\r\norigin: http://a\r\naccess-control-request-method: POST\r\ncontent-length: 1000000\r\n\r\n")
            let r = try c.readResponse()
            #expect(r.status == 413 && r.text.contains("open routes"), "\(method) \(path): \(r.status) \(r.text)")
            // Chunked, with no length up front: refused once past 4 KiB.
            let d = try HTTPConnection(port: smg.port)
            try d.send("\(method) \(path) HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n1400\r\n\(String(repeating: "a", count: 0x1400))\r\n")
            #expect(try d.readResponse().status == 413)
        }
        #expect(try smg.request("GET", "/health").status == 200, "no body is fine")
        let auth = [("authorization", "Bearer k")]
        let big = String(repeating: "x", count: 450_000)
        let responses = try smg.request("POST", "/v1/responses", body: #"{"model":"sim-model","input":"\#(big)","store":false}"#, headers: auth)
        #expect(responses.status == 413 && responses.text.contains("--max-responses-payload-size"), "\(responses.text)")
        let conversations = try smg.request("POST", "/v1/conversations", body: #"{"metadata":{"a":"\#(big)"}}"#, headers: auth)
        #expect(conversations.status == 413)
        // Under it, a body large enough to be parsed off the event loop is served.
        let served = try smg.request("POST", "/v1/responses", body: #"{"model":"sim-model","input":"\#(big.prefix(300_000))","store":false}"#, headers: auth)
        #expect(served.status == 200, "\(served.text.prefix(300))")
        // Inference keeps --max-payload-size.
        #expect(try smg.request("POST", "/v1/completions", body: #"{"prompt":"\#(big)"}"#, headers: auth).status == 200)
    }

    @Test func malformedJSONGets400() async throws {
        let w = try await InProcessWorker(name: "a")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin"])
        for body in ["{bad", "", "[1,2]", #"{"model": "m",}"#, #"{"a":1} trailing"#, "{\"a\":\"\u{1}\"}"] {
            let r = try smg.request("POST", "/v1/chat/completions", body: body)
            #expect(r.status == 400, "body \(body.debugDescription)")
            #expect(r.errorCode == "invalid_json")
            let error = try r.json()["error"] as? [String: Any]
            #expect(error?["type"] as? String == "invalid_request_error")
            #expect(error?.keys.contains("param") == true)
        }
        // Invalid UTF-8 inside a string.
        let bytes: [UInt8] = Array(#"{"messages":[{"role":"user","content":""#.utf8) + [0xC3, 0x28] + Array(#""}]}"#.utf8)
        let r = try HTTPClient.request(port: smg.port, method: "POST", path: "/v1/chat/completions", body: bytes)
        #expect(r.status == 400)
        // Deep nesting is refused, not recursed into.
        let deep = String(repeating: "[", count: 100_000)
        #expect(try smg.request("POST", "/generate", body: #"{"text":\#(deep)}"#).status == 400)
        #expect(try w.stats()["requests"] == 0)
    }

    /// A count of requests in one body above `--max-batch-size` is refused before any worker sees
    /// it, also outside PD mode: no client makes a worker multiply its work through the router.
    @Test func aBatchAboveTheBoundGets400() async throws {
        let w = try await InProcessWorker(name: "a")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin", "--max-batch-size", "4"])
        for (path, body) in [("/v1/chat/completions", #"{"model":"sim-model","n":5,"messages":[{"role":"user","content":"x"}]}"#),
                             ("/v1/completions", #"{"prompt":["a","b","c","d","e"]}"#),
                             ("/generate", #"{"text":"a","sampling_params":{"\u006e":5}}"#)] {
            let r = try smg.request("POST", path, body: body)
            #expect(r.status == 400 && r.errorCode == "batch_too_large", "\(body): \(r.text)")
            #expect(r.text.contains("--max-batch-size"), "the message names the flag")
        }
        #expect((try w.stats()["requests"] ?? 0) == 0, "no refused body reached the worker")
        #expect(try smg.request("POST", "/v1/completions", body: #"{"prompt":["a","b","c","d"]}"#).status == 200, "at the bound is served")
    }

    @Test func unknownModelGets404AndNoWorkerGets503() async throws {
        let w = try await InProcessWorker(name: "a")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin"])
        try await waitForModels(smg, count: 1)
        let r = try smg.chat("x", model: "no-such-model")
        #expect(r.status == 404)
        #expect(r.errorCode == "model_not_found")

        let empty = try await InProcessRouter(["--policy", "round_robin"])
        let e = try empty.chat("x", model: "sim-model")
        #expect(e.status == 503)
        #expect(e.errorCode == "no_available_workers")
        #expect(e.header("x-smg-error-code") == "no_available_workers")
        #expect(try empty.request("GET", "/readiness").status == 503)
        #expect(try empty.request("GET", "/health").status == 200)
        #expect(try empty.request("GET", "/liveness").status == 200)
    }

    @Test func expect100ContinueIsAnsweredAtOnce() async throws {
        let w = try await InProcessWorker(name: "a")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--policy", "round_robin", "--max-payload-size", "100000"])
        let body = #"{"text":"\#(String(repeating: "x", count: 5000))"}"#
        let c = try HTTPConnection(port: smg.port, timeout: 5)
        try c.send("POST /generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\nexpect: 100-continue\r\n\r\n")
        let (status, _) = try c.readHead()
        #expect(status == 100)
        try c.send(body)
        let r = try c.readResponse()
        #expect(r.status == 200)
        // An oversized body is refused instead of invited.
        let d = try HTTPConnection(port: smg.port, timeout: 5)
        try d.send("POST /generate HTTP/1.1\r\nhost: x\r\ncontent-length: 200000\r\nexpect: 100-continue\r\n\r\n")
        #expect(try d.readResponse().status == 413)
    }

    @Test func unknownRoutesAndMethods() async throws {
        let smg = try await InProcessRouter(["--policy", "round_robin"])
        let r = try smg.request("GET", "/nope")
        #expect(r.status == 404)
        #expect(r.errorCode == "not_found")
        #expect(try smg.request("GET", "/v1/chat/completions").status == 405)
    }

    @Test func badInputNeverCrashesTheRouter() async throws {
        let w = try await SimWorkerProcess(name: "a")
        let smg = try await RouterProcess(["--worker-urls", w.url, "--policy", "round_robin"])

        // A truncated body: the client promises 100 bytes, sends 10 and leaves.
        let t = try HTTPConnection(port: smg.port)
        try t.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"messages")
        t.close()
        // Garbage instead of HTTP.
        let g = try HTTPConnection(port: smg.port)
        try g.send("\u{0}\u{1}\u{2} not http at all\r\n\r\n")
        _ = try? g.readResponse()
        // A 200 KB header.
        let h = try HTTPConnection(port: smg.port)
        try? h.send("GET /health HTTP/1.1\r\nhost: x\r\nx-big: \(String(repeating: "b", count: 200_000))\r\n\r\n")
        if let r = try? h.readResponse() { #expect(r.status >= 400) }
        // A wrong content type with a JSON body is still routed by its JSON.
        #expect(try smg.request("POST", "/v1/chat/completions", body: #"{"messages":[]}"#, headers: [("content-type", "text/plain")]).status == 200)
        // A slow client: the request head and body dribble in byte by byte.
        let s = try HTTPConnection(port: smg.port)
        let request = HTTPConnection.requestBytes(method: "POST", path: "/generate", headers: [("connection", "close")], body: Array(#"{"text":"slow"}"#.utf8))
        for b in request { try s.send([b]); try await Task.sleep(for: .milliseconds(2)) }
        #expect(try s.readResponse().status == 200)

        #expect(try smg.request("GET", "/health").status == 200)
        #expect(smg.process.process.isRunning)
    }
}
