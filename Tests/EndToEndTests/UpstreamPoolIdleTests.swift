import Foundation
import Testing
import TestSupport

/// `--upstream-pool-idle-timeout-secs`: a pooled connection to a worker idle longer than the
/// timeout is closed by the router and not reused (a worker closes one idle past its own
/// keep-alive, 5 s for SGLang and vLLM, and a request written into that close is lost to a
/// reset); 0 keeps idle connections. The router runs in process on one event loop, so it has
/// one pool; health checks and load polls are off and the worker is added with its model, so
/// only the test's requests open connections.
@Suite(.serialized) struct UpstreamPoolIdleTests {
    func router(idleTimeout: Int) async throws -> (InProcessRouter, RecordingWorker) {
        let worker = try await RecordingWorker()
        let smg = try await InProcessRouter(["--disable-health-check", "--disable-load-monitoring", "--disable-worker-overload-protection",
                                             "--upstream-pool-idle-timeout-secs", "\(idleTimeout)"], waitForWorkers: false)
        #expect(try smg.request("POST", "/workers", body: #"{"url": "\#(worker.url)", "model_id": "m"}"#).status < 300)
        return (smg, worker)
    }

    @Test func aConnectionIdleTooLongIsClosedAndNotReused() async throws {
        let (smg, worker) = try await router(idleTimeout: 1)
        #expect(try smg.chat("one", model: "m").status == 200)
        #expect(try smg.chat("two", model: "m").status == 200)
        #expect(worker.connections == 1, "back to back: one pooled connection")
        // Closed by the router once idle for 1 s, with no request to notice it.
        try await eventually(timeout: .seconds(5), "the idle connection is closed") { worker.openConnections == 0 }
        #expect(try smg.chat("three", model: "m").status == 200)
        #expect(worker.connections == 2, "a new connection after the idle timeout")
    }

    @Test func zeroKeepsIdleConnections() async throws {
        let (smg, worker) = try await router(idleTimeout: 0)
        #expect(try smg.chat("one", model: "m").status == 200)
        // Longer than the timeout the test above uses, with margin: nothing may close it.
        try await Task.sleep(for: .milliseconds(1_500))
        #expect(worker.openConnections == 1)
        #expect(try smg.chat("two", model: "m").status == 200)
        #expect(worker.connections == 1, "the idle connection was reused")
    }
}
