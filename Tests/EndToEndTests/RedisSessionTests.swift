import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `--session-store redis`: `manual`'s sticky sessions shared by routers that are not meshed,
/// and kept across a restart of every router.
@Suite(.serialized) struct RedisSessionTests {
    @Test func stickySessionsSurviveRestartingEveryRouterAndAreSharedWithoutAMesh() async throws {
        let redis = try await RedisServer()
        var workers: [SimWorkerProcess] = []
        for name in ["w1", "w2", "w3"] { workers.append(try await SimWorkerProcess(name: name)) }
        let flags = ["--policy", "manual", "--max-idle-secs", "600", "--worker-urls"] + workers.map(\.url)
        let shared = flags + ["--session-store", "redis", "--redis-url", redis.url]
        let keys = (0..<12).map { "user-\($0)" }
        func placement(_ router: RouterProcess) throws -> [String] {
            try keys.map { key in try router.chat("hi", headers: [("x-smg-routing-key", key)]).header("x-sim-worker") ?? "?" }
        }

        var a: RouterProcess? = try await RouterProcess(shared)
        let first = try placement(a!)
        #expect(!first.contains("?") && Set(first).count > 1, "keys spread over the workers: \(first)")
        // Written after each decision, without delaying it: wait until all are in Redis.
        try await eventually(timeout: .seconds(5), "every key is in Redis") {
            try redis.cli("DBSIZE") == [String(keys.count)]
        }
        let stored = try redis.cli("KEYS", "smg:session:*")
        #expect(stored.count == keys.count && stored.contains("smg:session:0::user-0"))
        let ttl = Int(try redis.cli("PTTL", "smg:session:0::user-0").first ?? "") ?? 0
        #expect(ttl > 590_000 && ttl <= 600_000, "expires after --max-idle-secs")

        // Another router, not meshed with the first, finds the same workers.
        let b = try await RouterProcess(shared)
        #expect(try placement(b) == first)

        // Every router restarts: the sessions are still where they were.
        a!.process.signal(SIGKILL)
        a = nil
        b.process.signal(SIGKILL)
        let c = try await RouterProcess(shared)
        #expect(try placement(c) == first)

        // Without the store, a fresh router places the keys anew (this is what the test would
        // see if Redis did nothing): with 12 keys on 3 workers, some land elsewhere.
        let alone = try await RouterProcess(flags)
        #expect(try placement(alone) != first)

        // Redis gone: routing goes on (a read gives up fast, writes are dropped).
        redis.stop()
        let started = ContinuousClock.now
        let r = try c.chat("hi", headers: [("x-smg-routing-key", "new-key")])
        #expect(r.status == 200)
        #expect(ContinuousClock.now - started < .seconds(2), "a session read gives up after 200 ms")
        #expect(try c.chat("hi", headers: [("x-smg-routing-key", "user-0")]).header("x-sim-worker") == first[0], "known keys stay where they are")
    }

    @Test func inPDModeEachHalfOfAPairIsKeptAndFound() async throws {
        // Each half is chosen by its own policy: Redis holds an assignment per half, under the
        // half's name, and a second router (not meshed) sends each key to the same pair.
        let redis = try await RedisServer()
        let fleet = try await PDTests.fleet(prefills: 2, decodes: 2)
        let shared = ["--policy", "manual", "--session-store", "redis", "--redis-url", redis.url]
        let keys = (0..<10).map { "user-\($0)" }
        func placement(_ r: RouterProcess) throws -> [String] {
            try keys.map { key in
                let answer = try r.request("POST", "/generate", body: #"{"text":"turn"}"#, headers: [("x-smg-routing-key", key)])
                return "\(answer.header("x-sim-prefill") ?? "?")+\(answer.header("x-sim-worker") ?? "?")"
            }
        }
        let a = try await PDTests.router(fleet, shared)
        let first = try placement(a)
        #expect(!first.contains { $0.contains("?") } && Set(first).count > 1, "keys spread over pairs: \(first)")
        try await eventually(timeout: .seconds(5), "both halves of every key are in Redis") {
            try redis.cli("DBSIZE") == [String(2 * keys.count)]
        }
        let stored = Set(try redis.cli("KEYS", "smg:session:*"))
        #expect(stored.contains("smg:session:8:prefill::user-0") && stored.contains("smg:session:7:decode::user-0"), "\(stored.sorted().prefix(4))")
        let b = try await PDTests.router(fleet, shared)
        #expect(try placement(b) == first)
    }

    @Test func sessionsReadFromRedisReachTheMeshSoARedisOutageMovesNone() async throws {
        let redis = try await RedisServer()
        var workers: [SimWorkerProcess] = []
        for name in ["w1", "w2", "w3"] { workers.append(try await SimWorkerProcess(name: name)) }
        let common = ["--policy", "manual", "--session-store", "redis", "--redis-url", redis.url, "--worker-urls"] + workers.map(\.url)
        let keys = (0..<12).map { "user-\($0)" }
        func placement(_ router: RouterProcess) throws -> [String] {
            try keys.map { key in try router.chat("hi", headers: [("x-smg-routing-key", key)]).header("x-sim-worker") ?? "?" }
        }
        // Placed by a router of an earlier deployment: Redis holds them, no mesh does.
        let earlier = try await RouterProcess(common)
        let first = try placement(earlier)
        try await eventually(timeout: .seconds(5), "every key is in Redis") { try redis.cli("DBSIZE") == [String(keys.count)] }
        earlier.process.signal(SIGKILL)

        let (portB, portC) = (try freeLoopbackPort(), try freeLoopbackPort())
        func meshed(_ name: String, _ port: Int, _ peer: Int) async throws -> RouterProcess {
            try await RouterProcess(common + ["--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1", "--mesh-port", String(port),
                                              "--mesh-key-file", MeshMembershipTests.keyFile.path, "--mesh-peer-urls", "127.0.0.1:\(peer)"])
        }
        let b = try await meshed("b", portB, portC)
        let c = try await meshed("c", portC, portB)
        #expect(try placement(b) == first, "b reads them from Redis")
        // What b read from Redis, it told c: c holds every key without asking Redis.
        try await eventually(timeout: .seconds(5), "c holds the keys b read") {
            try c.metric(#"smg_policy_state_size{model="default",policy="manual"}"#) == Double(keys.count)
        }
        redis.stop()
        #expect(try placement(c) == first, "a Redis outage moves no session the mesh holds")
        #expect(try c.metric(#"smg_session_store_lookups_total{result="unavailable"}"#) == 0, "c never needed Redis")
    }

    @Test func theFlagNeedsARedisURL() async throws {
        let p = try TestProcess(Binaries.smg, ["--session-store", "redis"], name: "smg")
        let status = await p.waitForExit(timeout: .seconds(10))
        #expect(status == 2)
        #expect(p.stderr.contains("--session-store redis needs --redis-url"))
    }
}
