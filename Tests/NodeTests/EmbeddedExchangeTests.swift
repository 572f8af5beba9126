import Foundation
import RouterHarness
import Testing

/// The exchange end to end on an embedded loop (`EmbeddedRouter`): real `RouterHandler`, machine,
/// pool and HTTP codecs, with workers scripted byte by byte and time moved by hand, so the
/// orders of events that matter (which half answers first, a deadline, a dropped pooled
/// connection, a client leaving mid-stream) are each one exact, repeatable test.
@Suite struct EmbeddedExchangeTests {
    static let p1 = "http://198.18.0.1:8000", p2 = "http://198.18.0.2:8000", d1 = "http://198.18.0.3:8000"

    static func pd(prefills: [String] = [p1], _ extra: [String] = []) throws -> EmbeddedRouter {
        try EmbeddedRouter(["--pd-disaggregation", "--policy", "round_robin"] + prefills.flatMap { ["--prefill", $0, "9000"] } + ["--decode", d1] + extra)
    }

    /// The JSON body of a complete HTTP message, and its head.
    static func split(_ message: String) -> (head: String, body: String) {
        guard let r = message.range(of: "\r\n\r\n") else { return (message, "") }
        return (String(message[..<r.lowerBound]), String(message[r.upperBound...]))
    }

    static func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    @Test func bothHalvesGetTheSameRoomAndTheWholeAnswerWaitsForThePrefillsLogprobs() throws {
        let router = try Self.pd()
        let client = router.connect()
        client.post("/generate", #"{"text":"hi","return_logprob":true}"#)
        #expect(router.upstreams.map(\.worker) == [Self.p1, Self.d1], "the prefill half, then the decode half")
        let prefillBody = Self.json(Self.split(router.sent(on: 0)).body), decodeBody = Self.json(Self.split(router.sent(on: 1)).body)
        #expect(prefillBody["bootstrap_host"] as? String == "198.18.0.1" && prefillBody["bootstrap_port"] as? Int == 9000)
        #expect(prefillBody["bootstrap_room"] != nil && prefillBody["bootstrap_room"] as? Int == decodeBody["bootstrap_room"] as? Int)

        // The decode worker answers first: nothing goes out until the prefill's lists are known.
        router.answer(on: 1, EmbeddedRouter.answer(#"{"text":"out","meta_info":{"input_token_logprobs":[[-2.0,7,null]]}}"#))
        #expect(client.output.isEmpty)
        router.answer(on: 0, EmbeddedRouter.answer(#"{"text":"","meta_info":{"input_token_logprobs":[[-1.0,5,null]]}}"#))
        let (head, body) = Self.split(client.output)
        #expect(head.hasPrefix("HTTP/1.1 200") && head.contains("content-length: \(body.utf8.count)"), "\(head)")
        let merged = (Self.json(body)["meta_info"] as? [String: Any])?["input_token_logprobs"] as? [[Any]]
        #expect(merged?.map { $0[1] as? Int } == [5, 7], "the prefill's list in front of the decode's: \(body)")
        #expect(router.leaks.isEmpty, "\(router.leaks)")
        let pooled = router.upstreams.allSatisfy { $0.channel.isActive }
        #expect(pooled, "both connections went back to the pool")
    }

    @Test func aStreamHoldsItsEventsUntilThePrefillAnswersThenFlowsMerged() throws {
        let router = try Self.pd()
        let client = router.connect()
        client.post("/generate", #"{"text":"hi","return_logprob":true,"stream":true}"#)
        router.answer(on: 1, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        let event = #"data: {"text":"a","meta_info":{"input_token_logprobs":[[-2.0,7,null]]}}"# + "\n\n"
        router.answer(on: 1, String(event.utf8.count, radix: 16) + "\r\n" + event + "\r\n")
        #expect(client.output.hasPrefix("HTTP/1.1 200") && !client.output.contains("data:"), "the head goes out, the event waits")
        router.answer(on: 0, EmbeddedRouter.answer(#"{"meta_info":{"input_token_logprobs":[[-1.0,5,null]]}}"#))
        let merged = client.output.contains(#"[[-1.0,5,null],[-2.0,7,null]]"#) || client.output.contains(#"[[-1,5,null],[-2,7,null]]"#)
        #expect(merged, "the prefill's list in front of the decode's: \(client.output)")
        router.answer(on: 1, "0\r\n\r\n")
        #expect(client.output.hasSuffix("0\r\n\r\n"))
        #expect(router.leaks.isEmpty, "\(router.leaks)")
    }

    @Test func aFailedPrefillIsRetriedOnAnotherPairAndOnlyThePrefillIsBlamed() throws {
        let router = try Self.pd(prefills: [Self.p1, Self.p2], ["--cb-failure-threshold", "1", "--retry-initial-backoff-ms", "10", "--retry-jitter-factor", "0"])
        let client = router.connect()
        client.post("/generate", #"{"text":"hi"}"#)
        router.closeUpstream(0)  // p1 drops the request
        #expect(!router.upstreams[1].channel.isActive, "the decode half of the failed attempt is closed")
        #expect(router.upstreams.count == 2, "nothing before the backoff")
        router.advance(by: .milliseconds(10))
        #expect(router.upstreams.map(\.worker) == [Self.p1, Self.d1, Self.p2, Self.d1], "a new pair: the other prefill")
        router.answer(on: 2, EmbeddedRouter.answer("{}"))
        router.answer(on: 3, EmbeddedRouter.answer(#"{"text":"ok"}"#))
        #expect(client.output.hasPrefix("HTTP/1.1 200"))
        #expect(router.breaker(Self.p1) == "open" && router.breaker(Self.d1) == "closed" && router.breaker(Self.p2) == "closed")
        #expect(router.metric(#"smg_pd_prefill_failures_total{worker="\#(Self.p1)",reason="transport"}"#) == 1)
        #expect(router.leaks.isEmpty, "\(router.leaks)")
    }

    @Test func aDeadlineWithNeitherHalfAnsweredIsThePrefillsTimeout() throws {
        let router = try Self.pd(["--disable-retries", "--request-timeout-secs", "5"])
        let client = router.connect()
        client.post("/generate", #"{"text":"hi"}"#)
        router.advance(by: .milliseconds(4900))
        #expect(client.output.isEmpty)
        router.advance(by: .milliseconds(100))
        let (head, body) = Self.split(client.output)
        let error = Self.json(body)["error"] as? [String: Any]
        #expect(head.hasPrefix("HTTP/1.1 504") && error?["code"] as? String == "prefill_timeout" && error?["type"] as? String == "timeout_error", "\(client.output)")
        #expect(router.upstreams.allSatisfy { !$0.channel.isActive }, "both halves' connections closed")
        #expect(router.breaker(Self.d1) == "closed")
        #expect(router.leaks.isEmpty, "\(router.leaks)")
    }

    /// With no retry left, a failed half is a 502 that names the half, with the type a failed
    /// worker has without PD.
    @Test func aPrefillFailingForGoodIsA502OfThePrefillHalf() throws {
        let router = try Self.pd(["--disable-retries"])
        let client = router.connect()
        client.post("/generate", #"{"text":"hi"}"#)
        router.answer(on: 0, EmbeddedRouter.answer(status: 500, "{}"))
        let (head, body) = Self.split(client.output)
        let error = Self.json(body)["error"] as? [String: Any]
        #expect(head.hasPrefix("HTTP/1.1 502") && error?["code"] as? String == "prefill_failed" && error?["type"] as? String == "bad_gateway", "\(client.output)")
        #expect(router.metric(#"smg_pd_prefill_failures_total{worker="\#(Self.p1)",reason="status_500"}"#) == 1)
        #expect(router.leaks.isEmpty, "\(router.leaks)")
    }

    /// A prefill that never answers is given up at the deadline (counted as its timeout) and the
    /// request retried on another pair; nothing is left counted in flight.
    @Test func aPrefillThatNeverAnswersIsGivenUpAndTheRequestServedByAnother() throws {
        let router = try Self.pd(prefills: [Self.p1, Self.p2], ["--request-timeout-secs", "2", "--retry-initial-backoff-ms", "10", "--retry-jitter-factor", "0"])
        let client = router.connect()
        client.post("/generate", #"{"text":"hi"}"#)
        router.advance(by: .seconds(2))
        router.advance(by: .milliseconds(10))
        #expect(router.upstreams.map(\.worker) == [Self.p1, Self.d1, Self.p2, Self.d1])
        router.answer(on: 2, EmbeddedRouter.answer("{}"))
        router.answer(on: 3, EmbeddedRouter.answer(#"{"text":"ok"}"#))
        #expect(client.output.hasPrefix("HTTP/1.1 200"), "\(client.output)")
        #expect(router.metric(#"smg_pd_prefill_failures_total{worker="\#(Self.p1)",reason="timeout"}"#) == 1)
        #expect(router.breaker(Self.d1) == "closed")
        #expect(router.leaks.isEmpty, "\(router.leaks)")
    }

    @Test func theClientLeavingMidStreamClosesBothHalves() throws {
        let router = try Self.pd()
        let client = router.connect()
        client.post("/generate", #"{"text":"hi","stream":true}"#)
        router.answer(on: 1, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n5\r\ndata:\r\n")
        client.close()
        #expect(router.upstreams.allSatisfy { !$0.channel.isActive }, "an abandoned generation costs no more GPU time")
        #expect(router.leaks.isEmpty, "\(router.leaks)")
    }

    @Test func aPooledConnectionTheWorkerDroppedIsResentOnAFreshOneWithoutARetry() throws {
        let router = try EmbeddedRouter(["--worker-urls", Self.p1])
        let client = router.connect()
        let chat = #"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
        client.post("/v1/chat/completions", chat)
        router.answer(on: 0, EmbeddedRouter.answer("{}"))
        client.post("/v1/chat/completions", chat)
        #expect(router.upstreams.count == 1 && router.sent(on: 0).components(separatedBy: "POST ").count == 3, "the second request on the pooled connection")
        router.closeUpstream(0)  // the worker had closed it: no answer byte
        #expect(router.upstreams.count == 2, "sent again at once on a fresh connection")
        router.answer(on: 1, EmbeddedRouter.answer("{}"))
        #expect(client.output.components(separatedBy: "HTTP/1.1 200").count == 3, "\(client.output)")
        #expect(router.metric(#"smg_worker_retries_total{worker_type="regular",endpoint="chat"}"#) == 0)
        #expect(router.breaker(Self.p1) == "closed")
        #expect(router.leaks.isEmpty, "\(router.leaks)")
    }

    @Test func pipelinedRequestsAreAnsweredInOrderOverOnePooledConnection() throws {
        let router = try EmbeddedRouter(["--worker-urls", Self.p1])
        let client = router.connect()
        let body = #"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
        let request = "POST /v1/chat/completions HTTP/1.1\r\nhost: r\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)"
        client.send(request + request)
        #expect(router.sent(on: 0).components(separatedBy: "POST ").count == 2, "one request at a time")
        router.answer(on: 0, EmbeddedRouter.answer(#"{"n":1}"#))
        router.answer(on: 0, EmbeddedRouter.answer(#"{"n":2}"#))
        let out = client.output
        #expect(router.upstreams.count == 1)
        #expect(out.components(separatedBy: "HTTP/1.1 200").count == 3 && out.range(of: #"{"n":1}"#)!.lowerBound < out.range(of: #"{"n":2}"#)!.lowerBound, "\(out)")
        #expect(router.leaks.isEmpty, "\(router.leaks)")
    }
}
