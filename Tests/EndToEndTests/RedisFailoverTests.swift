import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// History on Redis run for high availability: routers that follow the Sentinels through a
/// master's death, and turns answered only once a replica holds them.
@Suite(.serialized) struct RedisFailoverTests {
    /// A Responses chain over two routers; the master is killed with -9 in the middle. Every
    /// turn a router acknowledged is still there after the promotion, the chain goes on through
    /// either router, and the worker reads the whole chain.
    @Test func aResponsesChainGoesOnThroughAMastersDeathAndLosesNoTurn() async throws {
        let redis = try await RedisSentinelDeployment()
        let w = try await InProcessWorker(name: "w")
        let flags = ["--worker-urls", w.url, "--history-backend", "redis", "--redis-url", redis.url]
        let routers = [try await InProcessRouter(flags), try await InProcessRouter(flags)]
        var previous: String?
        var chain = ""
        var acknowledged: [String] = []

        /// One turn on `router`, continuing the chain; true when it was answered and stored.
        func turn(_ n: Int, on router: InProcessRouter) throws -> Bool {
            let input = "turn \(n)."
            let body = previous.map { #"{"input":"\#(input)","previous_response_id":"\#($0)"}"# } ?? #"{"input":"\#(input)"}"#
            let r = try router.respond(body)
            guard r.status == 200, r.header("x-smg-history-write") == nil else { return false }
            #expect(r.header("x-sim-prompt") == simPrompt(chain + input), "turn \(n) reads every turn before it")
            let id = try r.json()["id"] as? String ?? ""
            acknowledged.append(id)
            previous = id
            chain += input + ResponsesTests.answer
            return true
        }

        for n in 0..<6 { #expect(try turn(n, on: routers[n % 2])) }
        redis.master.stop()  // SIGKILL
        // Until the replica is promoted, a turn that needs the previous one is refused (503)
        // and nothing is stored; the client tries again.
        let killed = ContinuousClock.now
        var n = 6
        try await eventually(timeout: .seconds(20), "the chain goes on after the promotion") { try turn(n, on: routers[n % 2]) }
        // The Sentinels take 1 s to judge the master down and about as long to promote; history
        // is to answer again within 5 s of the promotion.
        #expect(ContinuousClock.now - killed < .seconds(8), "history back \(ContinuousClock.now - killed) after the kill")
        #expect(redis.namedMasterPort() == redis.replica.port)
        n += 1
        while n < 12 {
            #expect(try turn(n, on: routers[n % 2]), "turn \(n) after the failover")
            n += 1
        }
        for id in acknowledged {
            for router in routers { #expect(try router.request("GET", "/v1/responses/\(id)").status == 200, "\(id) kept") }
        }
        #expect(acknowledged.count == 12)
    }

    /// WAIT: with the only replica stopped, a turn is answered but marked deferred (it is on the
    /// master alone), and written again until the replica confirms it.
    @Test func aTurnNoReplicaConfirmedIsAnsweredDeferredAndWrittenAgain() async throws {
        let master = try await RedisServer()
        let replica = try await RedisServer(["--replicaof", "127.0.0.1", String(master.port)])
        try await eventually(timeout: .seconds(10), "the replica is in sync") { (try? replica.cli("ROLE"))?.contains("connected") == true }
        let w = try await InProcessWorker(name: "w")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--history-backend", "redis", "--redis-url", master.url,
                                             "--redis-wait-timeout-ms", "200"])
        let before = try smg.respond(#"{"input":"before"}"#)
        #expect(before.status == 200 && before.header("x-smg-history-write") == nil, "confirmed by the replica")
        replica.signal(SIGSTOP)
        defer { replica.signal(SIGCONT) }
        let during = try smg.respond(#"{"input":"during"}"#)
        #expect(during.status == 200 && during.header("x-smg-history-write") == "deferred", "answered, marked as not stored yet")
        let id = try during.json()["id"] as? String ?? ""
        replica.signal(SIGCONT)
        try await eventually(timeout: .seconds(35), "the deferred write is confirmed") {
            try smg.metric(#"smg_history_operations_total{op="save_response",result="ok_after_retry"}"#) == 1
        }
        #expect(try replica.cli("EXISTS", "response:\(id)") == ["1"], "the replica holds it")
        let none = try smg.respond(#"{"input":"x","store":false}"#)
        #expect(none.status == 200 && none.header("x-smg-history-write") == nil)
        #expect(try smg.request("GET", "/v1/responses/\(id)").status == 200)
    }
}
