import Foundation
import TestSupport
import Testing

/// Strings a client writes never become router state: model names create no policies and no
/// metric series, and a removed worker takes its series with it.
@Suite(.serialized) struct BoundedStateTests {
    @Test func aThousandMadeUpModelNamesLeaveMetricsAndPoliciesAsTheyWere() async throws {
        // A worker whose model is not known (its /v1/models is not a model list) takes any name.
        let open = try await RecordingWorker()
        let known = try await InProcessWorker(name: "known")
        let smg = try await InProcessRouter(["--worker-urls", open.url, known.url, "--disable-health-check"], waitForWorkers: false)
        try await eventually(timeout: .seconds(10), "the sim worker's model is discovered") {
            try smg.request("GET", "/v1/models").text.contains("sim-model")
        }
        let c = try HTTPConnection(port: smg.port)
        for i in 0..<1000 {
            let r = try c.request("POST", "/v1/chat/completions", body: Array(#"{"model":"made-up-\#(i)","messages":[{"role":"user","content":"x"}]}"#.utf8))
            #expect(r.status == 200)
        }
        let metrics = try smg.metrics()
        #expect(!metrics.contains("made-up-"), "no series per made-up model")
        #expect(metrics.contains(#"model="other""#))
        let policies = metrics.split(separator: "\n").filter { $0.hasPrefix("smg_policy_state_size{") }
        #expect(policies.count <= 2, "\(policies)")
        #expect(open.requests(to: "/v1/chat/completions").count == 1000)
    }

    @Test func aRemovedWorkerTakesItsSeriesWithIt() async throws {
        let a = try await InProcessWorker(name: "a")
        let b = try await InProcessWorker(name: "b")
        let smg = try await InProcessRouter(["--worker-urls", a.url, b.url, "--policy", "round_robin"])
        try await eventually(timeout: .seconds(10), "both workers serve") {
            Set(try (0..<4).map { _ in try smg.chat("x").header("x-sim-worker") ?? "" }) == ["a", "b"]
        }
        #expect(try smg.metrics().contains(#"worker="\#(b.url)""#))
        let id = (try smg.request("GET", "/workers").json()["workers"] as? [[String: Any]])?.first { $0["url"] as? String == b.url }?["id"] as? String ?? ""
        #expect(try smg.request("DELETE", "/workers/\(id)").status == 202)
        #expect(!(try smg.metrics().contains(#"worker="\#(b.url)""#)), "no series of the removed worker")
        #expect(try smg.metrics().contains(#"worker="\#(a.url)""#))
    }
}
