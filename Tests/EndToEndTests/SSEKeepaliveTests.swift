import Foundation
import TestSupport
import Testing

/// `--sse-keepalive-secs`: a relayed event stream that the worker leaves silent carries a
/// comment per interval, so an idle-timeout proxy between client and router does not cut a
/// stream waiting on a long prefill; never while bytes flow, and never inside an event.
@Suite(.serialized) struct SSEKeepaliveTests {
    static let comment = ": keep-alive"

    /// A streamed chat completion through `smg`, read whole: its status and the events as
    /// the client received them (split at blank lines).
    func stream(_ smg: InProcessRouter) throws -> (status: Int, events: [String]) {
        let c = try HTTPConnection.startStream(port: smg.port, body: #"{"stream":true,"max_tokens":3,"messages":[{"role":"user","content":"hi"}]}"#)
        let (status, headers) = try c.readHead()
        var text = ""
        _ = try c.readBody(headers) { piece in
            text += String(decoding: piece, as: UTF8.self)
            return true
        }
        return (status, text.components(separatedBy: "\n\n").filter { !$0.isEmpty })
    }

    @Test func aStreamWaitingOnALongPrefillCarriesCommentsBetweenEvents() async throws {
        // 2.5 s to the first token: with a 1 s interval, two comments before it.
        let w = try await InProcessWorker(name: "slow", ["--ttft-ms", "2500"])
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--sse-keepalive-secs", "1"])
        try await waitForModels(smg, count: 1)
        let (status, events) = try stream(smg)
        #expect(status == 200)
        let comments = events.filter { $0 == Self.comment }
        #expect((2...3).contains(comments.count), "\(events)")
        #expect(events.prefix(comments.count).allSatisfy { $0 == Self.comment }, "the comments come while the worker is silent, before its first event")
        for event in events where event != Self.comment {
            #expect(event.hasPrefix("data: "), "every other event is the worker's, whole: \(event)")
        }
        #expect(events.last == "data: [DONE]")
        #expect(try smg.metric("smg_sse_keepalives_total") == Double(comments.count))
    }

    @Test func aFlowingStreamCarriesNone() async throws {
        let w = try await InProcessWorker(name: "fast", ["--tokens-per-second", "20"])
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--sse-keepalive-secs", "1"])
        try await waitForModels(smg, count: 1)
        // Three tokens at 20 a second: well inside the interval.
        let (status, events) = try stream(smg)
        #expect(status == 200 && !events.contains(Self.comment), "\(events)")
    }

    @Test func aSilenceInsideAnEventGetsNoComment() async throws {
        // Half an event, 2.5 s of silence, the rest: a comment there would corrupt the event.
        let w = try await InProcessWorker(name: "split", ["--misbehave", "pause-mid-event", "--ttft-ms", "2500"])
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--sse-keepalive-secs", "1", "--disable-retries"])
        try await waitForModels(smg, count: 1)
        let (status, events) = try stream(smg)
        #expect(status == 200)
        #expect(!events.contains { $0.contains(Self.comment) }, "\(events)")
        #expect(events.count == 2 && events[0].hasSuffix("after a pause\"}}]}") && events[1] == "data: [DONE]", "\(events)")
        #expect(try smg.metric("smg_sse_keepalives_total") == 0)
    }

    @Test func zeroSendsNone() async throws {
        let w = try await InProcessWorker(name: "slow", ["--ttft-ms", "1500"])
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--sse-keepalive-secs", "0"])
        try await waitForModels(smg, count: 1)
        let (status, events) = try stream(smg)
        #expect(status == 200 && !events.contains(Self.comment), "\(events)")
    }
}
