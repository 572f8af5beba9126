import Foundation
import RouterHarness
import Testing

/// Deadlines and admission on `EmbeddedRouter`: the worker's silence and the queue's timers are
/// exact (time moves by hand), so each way a request can end is one step, not a wait.
@Suite struct EmbeddedReliabilityTests {
    static let w1 = "http://198.18.0.1:8000", w2 = "http://198.18.0.2:8000"
    static let chat = #"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
    static let stream = #"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#
    static let streamHead = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n"

    /// The upstream connections opened to `worker` that are still open, in order.
    static func open(_ router: EmbeddedRouter, to worker: String) -> [Int] {
        router.upstreams.indices.filter { router.upstreams[$0].worker == worker && router.upstreams[$0].channel.isActive }
    }

    @Test func aHungWorkerIsCutAtTheTimeoutAndItsRequestsRetriedElsewhere() throws {
        let router = try EmbeddedRouter(["--worker-urls", Self.w1, Self.w2, "--policy", "round_robin", "--request-timeout-secs", "1",
                                         "--retry-initial-backoff-ms", "10", "--retry-jitter-factor", "0", "--disable-circuit-breaker"])
        for i in 0..<4 {
            let client = router.connect()
            client.post("/v1/chat/completions", Self.chat)
            if let hung = Self.open(router, to: Self.w1).last, router.sent(on: hung).contains("POST") {
                router.advance(by: .milliseconds(999))
                #expect(client.output.isEmpty, "request \(i): nothing before the deadline")
                router.advance(by: .milliseconds(1))
                #expect(!router.upstreams[hung].channel.isActive, "request \(i): the hung attempt's connection is closed")
                router.advance(by: .milliseconds(10))
            }
            guard let good = Self.open(router, to: Self.w2).last else {
                Issue.record("request \(i) never reached the good worker")
                continue
            }
            router.answer(on: good, EmbeddedRouter.answer(#"{"ok":\#(i)}"#))
            #expect(client.output.hasPrefix("HTTP/1.1 200") && client.output.hasSuffix(#"{"ok":\#(i)}"#), "request \(i): \(client.output)")
        }
        #expect(router.upstreams.contains { $0.worker == Self.w1 }, "requests did go to the hung worker first")
        #expect(router.metric(#"smg_worker_retries_total{worker_type="regular",endpoint="chat"}"#) >= 2)
        #expect(router.leaks.isEmpty, "\(router.leaks)")
    }

    @Test func admissionIsReleasedOnceHoweverARequestEnds() throws {
        let router = try EmbeddedRouter(["--worker-urls", Self.w1, "--max-concurrent-requests", "2", "--queue-size", "8",
                                         "--queue-timeout-secs", "1", "--request-timeout-secs", "6", "--disable-retries"])
        func gauges() -> [Double] {
            [router.metric("smg_admission_inflight"), router.metric("smg_admission_queue_depth"), router.metric("smg_http_requests_active")]
        }
        // Success.
        let ok = router.connect()
        ok.post("/v1/chat/completions", Self.chat)
        router.answer(on: router.upstreams.count - 1, EmbeddedRouter.answer("{}"))
        #expect(ok.output.hasPrefix("HTTP/1.1 200"))
        // The client leaves mid-stream.
        let leaving = router.connect()
        leaving.post("/v1/chat/completions", Self.stream)
        router.answer(on: router.upstreams.count - 1, Self.streamHead)
        leaving.close()
        #expect(gauges() == [0, 0, 0], "\(gauges())")
        // Two streams hold both slots; a third waits in the queue and its client leaves; a
        // fourth times out in the queue.
        let a = router.connect(), b = router.connect()
        a.post("/v1/chat/completions", Self.stream)
        router.answer(on: router.upstreams.count - 1, Self.streamHead)
        b.post("/v1/chat/completions", Self.stream)
        router.answer(on: router.upstreams.count - 1, Self.streamHead)
        #expect(router.metric("smg_admission_inflight") == 2)
        let queued = router.connect()
        queued.post("/v1/chat/completions", Self.chat)
        #expect(router.metric("smg_admission_queue_depth") == 1)
        queued.close()
        #expect(router.metric("smg_admission_queue_depth") == 0, "its client left, so it left the queue")
        let impatient = router.connect()
        impatient.post("/v1/chat/completions", Self.chat)
        router.advance(by: .seconds(1))
        #expect(impatient.output.hasPrefix("HTTP/1.1 408") && impatient.output.contains(#""code":"queue_timeout""#), "\(impatient.output)")
        a.close()
        b.close()
        // A worker's error answer, then a worker that never answers.
        let failing = router.connect()
        failing.post("/v1/chat/completions", Self.chat)
        router.answer(on: router.upstreams.count - 1, EmbeddedRouter.answer(status: 500, "{}"))
        #expect(failing.output.hasPrefix("HTTP/1.1 500"))
        let hanging = router.connect()
        hanging.post("/v1/chat/completions", Self.chat)
        router.advance(by: .seconds(6))
        #expect(hanging.output.hasPrefix("HTTP/1.1 504"), "\(hanging.output)")
        #expect(gauges() == [0, 0, 0], "\(gauges())")
        // Both slots are really free: two requests at once are admitted without waiting.
        let c = router.connect(), d = router.connect()
        c.post("/v1/chat/completions", Self.chat)
        d.post("/v1/chat/completions", Self.chat)
        #expect(router.metric("smg_admission_inflight") == 2 && router.metric("smg_admission_queue_depth") == 0)
        for k in Self.open(router, to: Self.w1).suffix(2) { router.answer(on: k, EmbeddedRouter.answer("{}")) }
        #expect(c.output.hasPrefix("HTTP/1.1 200") && d.output.hasPrefix("HTTP/1.1 200"))
        #expect(gauges() == [0, 0, 0], "\(gauges())")
        #expect(router.leaks.isEmpty, "\(router.leaks)")
    }
}
