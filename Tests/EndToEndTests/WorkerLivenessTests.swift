import Dispatch
import Foundation
import TestSupport
import Testing

/// Workers that pass their health probes but do not serve: one that takes requests and never
/// answers (wedged) stops getting new ones within `--worker-wedge-secs` and a look, and gets them
/// again once it answers; one that went away (stalled) is left out at the first call that gets no
/// answer after `--worker-stall-secs` of silence, not after a breaker's worth of failures, and
/// comes back at its first answer. Health checks run every 60 s here, so none of this is theirs.
@Suite(.serialized) struct WorkerLivenessTests {
    /// Sends `n` chat completions at once, each from a thread of its own (not a pool that may
    /// run fewer at once), and returns at once.
    func fire(_ n: Int, at smg: InProcessRouter) {
        for i in 0..<n {
            Thread { _ = try? smg.chat("fired \(i)") }.start()
        }
    }

    @Test func aWedgedWorkerGetsNoNewRequestsUntilItAnswers() async throws {
        let calm = try await InProcessWorker(name: "calm")
        let wedged = try await InProcessWorker(name: "wedged", ["--hang-rate", "1"])
        // Hung requests end at the router after 4 s (504, retried on the other worker).
        let smg = try await InProcessRouter(["--worker-urls", calm.url, wedged.url, "--policy", "round_robin", "--worker-wedge-secs", "1",
                                             "--request-timeout-secs", "4"])
        try await waitForModels(smg, count: 2)
        fire(8, at: smg)  // half of them pile up on the wedged worker
        let veto = #"smg_worker_stalled{worker="\#(wedged.url)",reason="wedge"}"#
        // The bound, the watch's look (every 250 ms) and margin.
        try await eventually(timeout: .seconds(1 + 1 + 5), "the silent pile is taken for a wedge") { try smg.metric(veto) == 1 }
        let before = try wedged.stats()["requests"] ?? 0
        for i in 0..<10 {
            let answer = try smg.chat("after \(i)")
            #expect(answer.status == 200 && answer.header("x-sim-worker") == "calm")
        }
        #expect(try wedged.stats()["requests"] == before, "no new request reached the wedged worker")
        #expect(try smg.metric(#"smg_worker_stall_transitions_total{worker="\#(wedged.url)",reason="wedge"}"#) == 1)
        // It recovers. Its held requests end at the request timeout; then it may take one at a
        // time, and the first answer ends the veto.
        try wedged.setFaults("hang_rate=0")
        try await eventually(timeout: .seconds(4 + 1 + 10), "the recovered worker serves again") {
            (try? smg.chat("probe").header("x-sim-worker")) == "wedged"
        }
        try await eventually(timeout: .seconds(5), "the veto is gone") { try smg.metric(veto) == 0 }
        #expect(try smg.metrics().contains(veto) == false, "no series once the veto is gone")
    }

    @Test func oneSilentLongRequestIsNotAWedge() async throws {
        // 3 s to the first token, longer than the wedge bound: one such request at a time is a
        // long prefill, and the worker keeps getting its share.
        let slow = try await InProcessWorker(name: "slow", ["--ttft-ms", "3000"])
        let smg = try await InProcessRouter(["--worker-urls", slow.url, "--policy", "round_robin", "--worker-wedge-secs", "1"])
        try await waitForModels(smg, count: 1)
        for _ in 0..<2 { #expect(try smg.chat("long prefill").status == 200) }
        #expect(try smg.metric(#"smg_worker_stall_transitions_total{worker="\#(slow.url)",reason="wedge"}"#) == 0)
    }

    @Test func aWorkerThatWentAwayIsLeftOutAtTheFirstUnansweredCallAndBackAtItsFirstAnswer() async throws {
        let calm = try await InProcessWorker(name: "calm")
        // A process, so that a kill takes its connections with it.
        let gone = try await SimWorkerProcess(name: "gone")
        // Load polls every second are the contact; breakers and health checks would take much
        // longer (10 failures; checks every 60 s).
        let smg = try await InProcessRouter(["--worker-urls", calm.url, gone.url, "--policy", "round_robin", "--load-monitor-interval", "1",
                                             "--worker-stall-secs", "2"])
        try await waitForModels(smg, count: 2)
        gone.process.signal(SIGKILL)
        let veto = #"smg_worker_stalled{worker="\#(gone.url)",reason="stall"}"#
        // Two seconds of silence, then the next poll's refused connection; margin.
        try await eventually(timeout: .seconds(2 + 1 + 5), "the silent worker is stalled") { try smg.metric(veto) == 1 }
        for i in 0..<10 {
            let answer = try smg.chat("while it is gone \(i)")
            #expect(answer.status == 200 && answer.header("x-sim-worker") == "calm")
        }
        #expect(try smg.metric(#"smg_worker_retries_total{worker_type="regular",endpoint="chat"}"#) == 0, "no request was sent to it to fail")
        // It comes back at the same address: the next poll answered re-admits it.
        let back = try await SimWorkerProcess(name: "back", port: gone.port)
        try await eventually(timeout: .seconds(1 + 2 + 5), "the worker is back in routing") {
            (try? smg.chat("again").header("x-sim-worker")) == "back"
        }
        #expect(try smg.metric(veto) == 0)
        _ = back
    }
}
