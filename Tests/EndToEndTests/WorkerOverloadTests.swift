import Dispatch
import Foundation
import TestSupport
import Testing

/// Worker overload protection, end to end over simulated workers whose `/v1/loads` reports a
/// queue or a KV-cache usage: an overloaded worker gets no new requests while another is under
/// the thresholds, comes back when its report does, and a request whose workers are all over
/// goes to the least loaded of them or, with `--worker-overload-shed`, is refused with 503.
///
/// The router polls every second here; each wait is derived from that interval with a margin
/// for a busy 2-core machine.
@Suite(.serialized) struct WorkerOverloadTests {
    static let interval = 1
    /// One poll, its timeout, and margin.
    static let pollSeen = Duration.seconds(interval + 2 + 5)
    /// A report counts for three polls; then margin.
    static let reportExpired = Duration.seconds(3 * interval + 2 + 5)

    func router(_ workers: [InProcessWorker], _ extra: [String] = []) async throws -> InProcessRouter {
        let smg = try await InProcessRouter(["--worker-urls"] + workers.map(\.url) + ["--policy", "round_robin", "--load-monitor-interval", "\(Self.interval)"] + extra)
        try await waitForModels(smg, count: workers.count)
        return smg
    }

    func served(_ smg: InProcessRouter, _ n: Int) throws -> [String] {
        try (0..<n).map { i in
            let answer = try smg.chat("request \(i)")
            try #require(answer.status == 200, "\(answer.status) \(answer.text)")
            return answer.header("x-sim-worker") ?? "?"
        }
    }

    func waitForOverloaded(_ smg: InProcessRouter, _ n: Int) async throws {
        try await eventually(timeout: Self.pollSeen, "\(n) workers overloaded by their reports") {
            try smg.metric(#"smg_workers_overloaded{model="sim-model"}"#) == Double(n)
        }
    }

    @Test func aWorkerWithALongQueueIsLeftOutUntilItsQueueIsGone() async throws {
        let calm = try await InProcessWorker(name: "calm")
        let queued = try await InProcessWorker(name: "queued", ["--reported-waiting", "20"])
        let smg = try await router([calm, queued])
        try await waitForOverloaded(smg, 1)
        #expect(try smg.metric(#"smg_engine_waiting_requests{worker="\#(queued.url)",model="sim-model",dp_rank="0"}"#) == 20)
        // GET /workers shows the report and the verdict.
        let workers = try #require(try smg.request("GET", "/workers").json()["workers"] as? [[String: Any]])
        let shown = try #require(workers.first { $0["url"] as? String == queued.url })
        #expect(shown["overloaded"] as? Bool == true)
        let engine = try #require(shown["engine_load"] as? [String: Any])
        #expect((engine["aggregate"] as? [String: Any])?["total_waiting_reqs"] as? Int == 20)
        #expect(((engine["loads"] as? [[String: Any]])?.first?["num_waiting_reqs"]) as? Int == 20)
        #expect(workers.first { $0["url"] as? String == calm.url }?["overloaded"] as? Bool == false)
        // Round robin would send it half of these.
        #expect(try served(smg, 12).allSatisfy { $0 == "calm" })
        // Its queue drains: the next poll lets it back in.
        try queued.setFaults("waiting=0")
        try await eventually(timeout: Self.pollSeen, "the drained worker serves again") { try served(smg, 4).contains("queued") }
        #expect(try smg.metric(#"smg_worker_overload_fallback_total{stage="selection"}"#) == 0)
    }

    @Test func aWorkerWithItsKVCacheNearlyFullIsLeftOut() async throws {
        let calm = try await InProcessWorker(name: "calm")
        let full = try await InProcessWorker(name: "full", ["--reported-token-usage", "0.8"])
        let smg = try await router([calm, full])
        try await waitForOverloaded(smg, 1)
        #expect(try smg.metric(#"smg_engine_token_usage{worker="\#(full.url)",model="sim-model",dp_rank="0"}"#) == 0.8)
        #expect(try served(smg, 12).allSatisfy { $0 == "calm" })
        // Just under the threshold (it is inclusive): a worker like any other.
        try full.setFaults("token_usage=0.79")
        try await eventually(timeout: Self.pollSeen, "the worker under the threshold serves again") { try served(smg, 4).contains("full") }
    }

    @Test func whenEveryWorkerIsOverloadedTheLeastLoadedServes() async throws {
        let longer = try await InProcessWorker(name: "longer", ["--reported-waiting", "30"])
        let shorter = try await InProcessWorker(name: "shorter", ["--reported-waiting", "10"])
        let smg = try await router([longer, shorter])
        try await waitForOverloaded(smg, 2)
        #expect(try served(smg, 8).allSatisfy { $0 == "shorter" })
        #expect(try smg.metric(#"smg_worker_overload_fallback_total{stage="selection"}"#) == 8)
        #expect(try smg.metric(#"smg_worker_overload_shed_total{stage="selection"}"#) == 0)
    }

    @Test func withSheddingEveryWorkerOverloadedIsA503WithRetryAfter() async throws {
        let a = try await InProcessWorker(name: "a", ["--reported-waiting", "9"])
        let b = try await InProcessWorker(name: "b", ["--reported-token-usage", "0.95"])
        let smg = try await router([a, b], ["--worker-overload-shed"])
        try await waitForOverloaded(smg, 2)
        for stream in [false, true] {
            let answer = try smg.chat("shed me", stream: stream)
            #expect(answer.status == 503)
            #expect(answer.header("retry-after") == "\(Self.interval)", "Retry-After is the poll interval: the next poll may see the queue gone")
            #expect(answer.header("x-smg-error-code") == "worker_overload_protection_shed")
            let error = try #require(try answer.json()["error"] as? [String: Any])
            #expect(error["code"] as? String == "worker_overload_protection_shed")
            #expect(error["type"] as? String == "service_unavailable")
            #expect((error["message"] as? String)?.contains("overloaded") == true)
        }
        #expect(try smg.request("POST", "/generate", body: #"{"text":"t"}"#).status == 503)
        #expect(try smg.metric(#"smg_worker_overload_shed_total{stage="selection"}"#) == 3)
        #expect(try smg.metric(#"smg_http_responses_total{path="/v1/chat/completions",status_code="503",error_code="worker_overload_protection_shed"}"#) == 2)
        // Nothing reached either worker.
        #expect(try a.stats()["requests"] == 0 && b.stats()["requests"] == 0)
        // One recovers: served again, by that one.
        try b.setFaults("token_usage=0.1")
        try await eventually(timeout: Self.pollSeen, "the recovered worker serves") { try smg.chat("again").status == 200 }
        #expect(try served(smg, 4).allSatisfy { $0 == "b" })
    }

    @Test func aReportThatStopsComingStopsCounting() async throws {
        let calm = try await InProcessWorker(name: "calm")
        let stuck = try await InProcessWorker(name: "stuck", ["--reported-waiting", "20"])
        // Its polls time out from now on: with --worker-stall-secs that alone would leave it out
        // as stalled (WorkerLivenessTests); here only the report's own lifetime is at stake.
        let smg = try await router([calm, stuck], ["--worker-stall-secs", "0"])
        try await waitForOverloaded(smg, 1)
        // Its load endpoint stops answering (health checks still pass): after three polls'
        // worth of silence the last report no longer keeps it out.
        try stuck.setFaults("loads=stall")
        let stalledAt = ContinuousClock.now
        #expect(try served(smg, 6).allSatisfy { $0 == "calm" })
        try await eventually(timeout: Self.reportExpired, "the stale report expires") { try served(smg, 4).contains("stuck") }
        #expect(ContinuousClock.now - stalledAt >= .seconds(2), "not before the report's lifetime (3 s, less the time since the last poll)")
    }

    @Test func protectionOffRoutesAsThePolicySays() async throws {
        let calm = try await InProcessWorker(name: "calm")
        let queued = try await InProcessWorker(name: "queued", ["--reported-waiting", "20"])
        let smg = try await router([calm, queued], ["--disable-worker-overload-protection"])
        try await eventually(timeout: Self.pollSeen, "the queue is reported") {
            try smg.metric(#"smg_engine_waiting_requests{worker="\#(queued.url)",model="sim-model",dp_rank="0"}"#) == 20
        }
        #expect(Set(try served(smg, 6)) == ["calm", "queued"])
        #expect(try smg.metrics().contains("smg_worker_overload_shed_total") == false, "no protection, no protection metrics")
        #expect(try smg.metrics().contains("smg_worker_liveness_fallback_total"), "the liveness rules are still on")
    }

    /// cache_aware's guards on reported KV usage, below overload protection's 0.8: over the
    /// ceiling the worker holding a prompt is passed over; a spread over the threshold sends the
    /// prompt to the least loaded (by the reports: running plus waiting).
    @Test func cacheAwareGivesWayToKVUsage() async throws {
        for flag in ["--overload-token-usage-threshold", "--balance-token-usage-threshold"] {
            let a = try await InProcessWorker(name: "a")
            let b = try await InProcessWorker(name: "b")
            let smg = try await InProcessRouter(["--worker-urls", a.url, b.url, "--load-monitor-interval", "\(Self.interval)", flag, "0.5"])
            try await waitForModels(smg, count: 2)
            let prompt = "a long system prompt that the cache-aware tree keeps for one worker and follows"
            let holder = try #require(try smg.chat(prompt).header("x-sim-worker"))
            #expect(try (0..<3).map { _ in try smg.chat(prompt).header("x-sim-worker") } == [holder, holder, holder], "\(flag): the cache is followed")
            let (hot, cold) = holder == "a" ? (a, b) : (b, a)
            // Its queue is short (under overload protection's 8) but longer than the other's.
            try hot.setFaults("token_usage=0.7&waiting=3")
            try cold.setFaults("token_usage=0.1")
            try await eventually(timeout: Self.pollSeen, "\(flag): the holder is passed over") { try smg.chat(prompt).header("x-sim-worker") != holder }
            #expect(try smg.metric(#"smg_workers_overloaded{model="sim-model"}"#) == 0, "0.7 is under overload protection's 0.8")
        }
    }

    /// Overload from real load: a worker whose batch (`--max-running 2`) is full reports its
    /// queue and a full KV cache, and is left out until its batch drains.
    @Test func aWorkerWhoseBatchFillsUpIsLeftOutUntilItDrains() async throws {
        let calm = try await InProcessWorker(name: "calm")
        let busy = try await InProcessWorker(name: "busy", ["--max-running", "2", "--ttft-ms", "3000"])
        let smg = try await router([calm, busy])
        for i in 0..<8 { Thread { _ = try? smg.chat("fired \(i)") }.start() }  // four reach busy: two run, two queue
        try await eventually(timeout: .seconds(5), "busy's batch is full and two wait") { try busy.stats()["queued"] == 2 }
        try await waitForOverloaded(smg, 1)
        #expect(try smg.metric(#"smg_engine_waiting_requests{worker="\#(busy.url)",model="sim-model",dp_rank="0"}"#) == 2)
        #expect(try served(smg, 6).allSatisfy { $0 == "calm" })
        // Its batch drains (3 s a request, two at a time): the next poll lets it back in.
        try await eventually(timeout: .seconds(2 * 3 + 1 + 2 + 5), "the drained worker serves again") { try served(smg, 4).contains("busy") }
    }

    /// A worker whose probes and load polls stop answering, while no request reaches it, is
    /// stalled (no contact for --worker-stall-secs, then a probe that gets no answer) and comes
    /// back at the first answer.
    @Test func aWorkerWhoseProbesStallIsLeftOutUntilOneAnswers() async throws {
        let calm = try await InProcessWorker(name: "calm")
        let mute = try await InProcessWorker(name: "mute")
        let smg = try await router([calm, mute], ["--health-check-interval-secs", "1", "--health-check-timeout-secs", "1", "--worker-stall-secs", "2"])
        try mute.setFaults("health=stall&loads=stall")
        let veto = #"smg_worker_stalled{worker="\#(mute.url)",reason="stall"}"#
        // Two seconds without contact, then a probe's or a poll's timeout (1 s); margin.
        try await eventually(timeout: .seconds(2 + 1 + 1 + 5), "the mute worker is stalled") { try smg.metric(veto) == 1 }
        #expect(try served(smg, 6).allSatisfy { $0 == "calm" })
        try mute.setFaults("health=answer&loads=answer")
        try await eventually(timeout: .seconds(1 + 1 + 5), "an answered probe ends the stall") { try smg.metric(veto) == 0 }
        try await eventually(timeout: .seconds(5), "it serves again") { try served(smg, 4).contains("mute") }
    }

    @Test func loadsArePolledAtTheInterval() async throws {
        let w = try await InProcessWorker(name: "w")
        let smg = try await router([w])
        let sample = #"smg_engine_load_polls_total{worker="\#(w.url)",mode="poll"}"#
        let first = try smg.metric(sample)
        try await eventually(timeout: Self.pollSeen, "polled again") { try smg.metric(sample) >= first + 2 }
    }
}
