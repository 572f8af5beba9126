import Foundation
import TestSupport
import Testing

/// What reaches a worker: nothing a caller can smuggle into a header line, no hop-by-hop
/// headers, the client's address in X-Forwarded-For; and one reading of every routing field.
@Suite(.serialized) struct HeaderHygieneTests {
    @Test func aWorkersAPIKeyCannotInjectHeadersOrRequests() async throws {
        let worker = try await RecordingWorker()
        let smg = try await InProcessRouter(["--policy", "round_robin", "--disable-health-check"])
        let added = try smg.request("POST", "/workers", body: #"{"url":"\#(worker.url)","model_id":"m","api_key":"k1"}"#)
        #expect(added.status == 202)
        let id = try added.json()["id"] as? String ?? ""
        for body in [#"{"api_key":"k\r\nX-Injected: 1"}"#, #"{"api_key":"k\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: w\r\n\r\n"}"#,
                     #"{"labels":{"zone":"a\nb"}}"#, #"{"model_id":"m\u0000"}"#] {
            let r = try smg.request("PATCH", "/workers/\(id)", body: body)
            #expect(r.status == 400, "\(body)")
            #expect(r.errorCode == "invalid_worker_field")
        }
        #expect(try smg.request("POST", "/workers", body: #"{"url":"http://127.0.0.1:9","api_key":"a\rb"}"#).status == 400)
        #expect(try smg.request("POST", "/workers", body: #"{"url":"http://\#(String(repeating: "a", count: 2100)):1"}"#).status == 400)

        #expect(try smg.chat("x", model: "m").status == 200)
        #expect(try smg.chat("y", model: "m").status == 200, "the pooled connection still carries one request per request")
        let chats = worker.requests(to: "/v1/chat/completions")
        #expect(chats.count == 2)
        #expect(worker.requests(to: "/smuggled").isEmpty)
        for head in chats {
            #expect(!head.headers.contains(name: "x-injected"))
            #expect(head.headers["authorization"] == ["Bearer k1"], "the key that was refused never replaced the old one")
        }
    }

    @Test func hopByHopHeadersStopAtTheRouterAndTheClientIsNamed() async throws {
        let worker = try await RecordingWorker()
        let smg = try await InProcessRouter(["--worker-urls", worker.url, "--policy", "round_robin", "--disable-health-check"], waitForWorkers: false)
        let r = try smg.request("POST", "/v1/chat/completions", body: #"{"model":"m","messages":[{"role":"user","content":"x"}]}"#, headers: [
            ("connection", "keep-alive, x-secret-hop"), ("x-secret-hop", "1"), ("proxy-authorization", "Basic cm9vdDpyb290"),
            ("proxy-foo", "1"), ("te", "trailers"), ("x-forwarded-for", "203.0.113.7"), ("x-kept", "yes"),
        ])
        #expect(r.status == 200)
        let head = try #require(worker.requests(to: "/v1/chat/completions").last)
        #expect(!head.headers.contains(name: "x-secret-hop"), "named by Connection")
        #expect(!head.headers.contains(name: "proxy-authorization") && !head.headers.contains(name: "proxy-foo") && !head.headers.contains(name: "te"))
        #expect(head.headers["x-kept"] == ["yes"])
        #expect(head.headers["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"])
    }

    @Test func aRoutingFieldGivenTwiceIsRefused() async throws {
        let w = try await InProcessWorker(name: "w")
        let smg = try await InProcessRouter(["--worker-urls", w.url])
        for body in [#"{"model":"a","mod\u0065l":"b","messages":[]}"#, #"{"model":"sim-model","model":"other","messages":[]}"#,
                     #"{"messages":[],"stream":false,"stream":true}"#, #"{"messages":[{"role":"user","content":"a"}],"messages":[]}"#] {
            let r = try smg.request("POST", "/v1/chat/completions", body: body)
            #expect(r.status == 400, "\(body)")
            #expect(r.errorCode == "duplicate_field", "\(body)")
        }
        // An escaped key is the field it spells, as the worker reads it.
        let escaped = try smg.request("POST", "/v1/chat/completions", body: #"{"mod\u0065l":"unknown-model","messages":[{"role":"user","content":"a"}]}"#)
        #expect(escaped.status == 404, "routed on the model the worker would read")
    }
}
