import Foundation
import Logging
@testable import Node
import NIOCore
import NIOPosix
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The Redis client behind Sentinels, against real `redis-server` processes: a master, a replica
/// and three Sentinels (quorum 2) that judge the master down after 1 s.
@Suite(.serialized) struct RedisSentinelTests {
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    static func client(_ d: RedisSentinelDeployment, durability: RedisClient.Durability = .default) throws -> RedisClient {
        RedisClient(url: try RedisURL(parsing: d.url), group: group, maxConnections: 4, commandTimeout: .seconds(1), durability: durability, logger: logger)
    }

    @Test func sentinelURLs() throws {
        let u = try RedisURL(parsing: "redis-sentinel://:p%40ss@10.0.0.1,10.0.0.2:26380,[::1]/3?sentinel_password=s3#my.master-1")
        #expect(u.server == .sentinel(master: "my.master-1", sentinels: [.init(host: "10.0.0.1", port: 26379), .init(host: "10.0.0.2", port: 26380),
                                                                        .init(host: "::1", port: 26379)], password: "s3"))
        #expect(u.password == "p@ss" && u.user == nil && u.database == 3)
        #expect(u.description == "redis-sentinel://10.0.0.1:26379,10.0.0.2:26380,[::1]:26379/3#my.master-1")
        #expect(try RedisURL(parsing: "redis://h:7000/1").server == .direct(.init(host: "h", port: 7000)))
        let tooMany = (0...RedisURL.maxSentinels).map { "h\($0)" }.joined(separator: ",")
        for bad in ["redis-sentinel://h1,h2", "redis-sentinel://h1#", "redis-sentinel://h1#a b", "redis-sentinel://h1,,h2#m",
                    "redis-sentinel://h1:0#m", "redis://h#m", "redis://h?sentinel_password=x", "redis-sentinel://h?x=1#m",
                    "redis-sentinel://\(tooMany)#m", "redis-sentinel://h#" + String(repeating: "m", count: RedisURL.maxMasterName + 1), "rediss-sentinel://h"] {
            #expect(throws: ConfigError.self, "\(bad)") { try RedisURL(parsing: bad) }
        }
        let redacted = RedisURL.redacted("redis-sentinel://:secret@h1,h2?sentinel_password=other#m")
        #expect(!redacted.contains("secret") && !redacted.contains("other") && redacted.hasSuffix("#m"), "\(redacted)")
    }

    @Test func badSettingsStopStartUpWithoutShowingPasswords() {
        func refusal(_ args: [String]) -> String {
            do { _ = try RouterConfig.load(arguments: args, environment: [:]); return "" } catch { return error.message }
        }
        for (url, says) in [("redis-sentinel://127.0.0.1:1", "name the master after #"),
                            ("redis-sentinel://127.0.0.1:1?sentinel_password=secret#a b", "master name"),
                            ("redis-sentinel://:secret@127.0.0.1:1,#m", "an address is empty")] {
            let problem = refusal(["--history-backend", "redis", "--redis-url", url])
            #expect(problem.contains(says) && !problem.contains("secret"), "\(url): \(problem)")
        }
        #expect(refusal(["--history-backend", "redis", "--redis-url", "redis://h", "--redis-wait-replicas", "17"]).contains("--redis-wait-replicas 17"))
        #expect(refusal(["--history-backend", "redis", "--redis-url", "redis://h", "--redis-wait-timeout-ms", "0"]).contains("--redis-wait-timeout-ms 0"))
        #expect(refusal(["--history-backend", "redis", "--redis-url", "redis://h", "--redis-op-timeout-secs", "0"]).contains("--redis-op-timeout-secs 0"))
        let pg = try? RouterConfig.load(arguments: ["--history-backend", "postgres", "--postgres-db-url", "postgres://u@h/d", "--postgres-pool-max", "3"],
                                        environment: [:])
        if case .postgres(_, let pool, _, _)? = pg?.history { #expect(pool == 3) } else { Issue.record("--postgres-pool-max not taken") }
        // The reference 1.13's spellings (--redis-pool-max) beside seed 000's.
        let config = try? RouterConfig.load(arguments: ["--history-backend", "redis", "--redis-url", "redis://h", "--redis-wait-replicas", "2",
                                                        "--redis-wait-timeout-ms", "250", "--redis-pool-max", "7", "--redis-op-timeout-secs", "3"],
                                            environment: [:])
        if case .redis(_, let pool, _, let durability, let timeout)? = config?.history {
            #expect(durability == .init(replicas: .count(2), timeout: .milliseconds(250)) && pool == 7 && timeout == 3)
        } else {
            Issue.record("not a Redis history: \(String(describing: config?.history))")
        }
    }

    @Test func repliesFromSentinelsAreReadStrictly() {
        #expect(RedisSentinel.address(.array([.string(Array("10.1.2.3".utf8)), .string(Array("6380".utf8))])) == .init(host: "10.1.2.3", port: 6380))
        for bad: RedisValue in [.null, .array([]), .array([.string(Array("h".utf8))]), .array([.string(Array("h".utf8)), .string(Array("0".utf8))]),
                                .array([.string([]), .string(Array("1".utf8))]), .error("ERR"), .string(Array("h:1".utf8))] {
            #expect(RedisSentinel.address(bad) == nil, "\(bad)")
        }
        let s = RedisSentinel(master: "m", sentinels: [.init(host: "127.0.0.1", port: 1)], password: nil, group: Self.group, timeout: .seconds(1),
                              logger: Self.logger, moved: { _ in })
        func push(_ payload: String) -> RedisValue { .array(["message", "+switch-master", payload].map { .string(Array($0.utf8)) }) }
        #expect(s.switchedMaster(push("m 10.0.0.1 6379 10.0.0.2 6380")) == .init(host: "10.0.0.2", port: 6380))
        #expect(s.switchedMaster(push("other 10.0.0.1 6379 10.0.0.2 6380")) == nil, "another master's failover")
        #expect(s.switchedMaster(push("m 10.0.0.1 6379 10.0.0.2")) == nil)
        #expect(s.switchedMaster(push("m 10.0.0.1 6379 10.0.0.2 99999")) == nil)
        #expect(s.switchedMaster(.array(["subscribe", "+switch-master"].map { .string(Array($0.utf8)) } + [.integer(1)])) == nil)
        let role = RedisClient.role(.array([.string(Array("master".utf8)), .integer(5), .array([.array([]), .array([])])]))
        #expect(role.name == "master" && role.replicas == 2)
        #expect(RedisClient.role(.array([.string(Array("slave".utf8)), .string(Array("h".utf8))])).name == "slave")
        #expect(RedisClient.role(.error("NOPERM")).name == nil)
    }

    /// The master killed with -9 in the middle of writes: the Sentinels promote the replica,
    /// the client follows, and every write it confirmed (WAIT 1) is on the new master.
    @Test func aKilledMasterIsFollowedAndNoConfirmedWriteIsLost() async throws {
        let d = try await RedisSentinelDeployment()
        let redis = try Self.client(d)
        defer { redis.close() }
        let follower = Task { await redis.followSentinels() }
        defer { follower.cancel() }
        var confirmed: [String] = []
        for i in 0..<50 {
            _ = try await redis.transaction([["SET", "turn:\(i)", "v\(i)"]], durable: true)
            confirmed.append("turn:\(i)")
        }
        d.master.stop()  // SIGKILL
        // Writes go on as soon as the replica is promoted; until then each one fails fast.
        let promoted = ContinuousClock.now
        var next = 50
        try await eventually(timeout: .seconds(20), "writes reach the promoted replica") {
            do {
                _ = try await redis.transaction([["SET", "turn:\(next)", "v\(next)"]], durable: true)
                confirmed.append("turn:\(next)")
                next += 1
                return true
            } catch {
                return false
            }
        }
        #expect(d.namedMasterPort() == d.replica.port)
        #expect(ContinuousClock.now - promoted < .seconds(15))
        for key in confirmed {
            #expect(try await redis.send(["GET", key], idempotent: true).text == "v" + key.dropFirst("turn:".count), "\(key) survived")
        }
        #expect(try d.replica.cli("GET", "turn:\(next - 1)") == ["v\(next - 1)"], "the client writes to the old replica now")
    }

    /// A forced failover (`SENTINEL FAILOVER`) demotes a master that is alive: a client that
    /// did not hear of it (no subscription) finds out from its next write, which is not lost.
    @Test func aDemotedMastersRefusalSendsTheWriteToTheNewOne() async throws {
        let d = try await RedisSentinelDeployment()
        let redis = try Self.client(d, durability: .none)
        defer { redis.close() }
        _ = try await redis.transaction([["SET", "before", "1"]])
        try d.forceFailover()
        try await eventually(timeout: .seconds(15), "the old master is a replica of the new one") {
            (try? d.master.cli("ROLE"))?.first == "slave" && d.namedMasterPort() == d.replica.port
        }
        // No subscription, so the pool may still hold connections to the demoted master.
        _ = try await redis.transaction([["SET", "after", "2"]])
        #expect(try d.replica.cli("GET", "after") == ["2"], "written on the new master")
        #expect(try await redis.send(["GET", "before"], idempotent: true).text == "1")
    }

    /// With the subscription, a failover closes the connections to the old master as it happens,
    /// before any command meets it.
    @Test func theSubscriptionMovesThePoolAtTheSwitch() async throws {
        let d = try await RedisSentinelDeployment()
        let redis = try Self.client(d, durability: .none)
        defer { redis.close() }
        let follower = Task { await redis.followSentinels() }
        defer { follower.cancel() }
        _ = try await redis.send(["PING"])
        #expect(redis.connectedServers == [.init(host: "127.0.0.1", port: d.master.port)])
        // The subscription is made once the follower has asked; give it its first second.
        try await eventually(timeout: .seconds(5), "the Sentinel counts a subscriber") {
            d.sentinels.contains { s in ((try? RedisServer.cli(port: s.port, "CLIENT", "LIST")) ?? []).contains { $0.contains(" sub=1 ") } }
        }
        try d.forceFailover()
        let forced = ContinuousClock.now
        try await eventually(timeout: .seconds(15), "the pool left the old master") { redis.connectedServers.isEmpty }
        // Without the subscription the pool leaves too, but only when Sentinel demotes the old
        // master and it drops its clients: 10 s and more after the switch here, against 1 to 2 s.
        #expect(ContinuousClock.now - forced < .seconds(6), "moved at the switch, not at the demotion")
        _ = try await redis.send(["PING"])
        #expect(redis.connectedServers == [.init(host: "127.0.0.1", port: d.replica.port)])
    }

    /// WAIT: a durable write that no replica confirms in time is reported, not silently taken.
    @Test func aDurableWriteThatNoReplicaConfirmsIsReported() async throws {
        let master = try await RedisServer()
        let replica = try await RedisServer(["--replicaof", "127.0.0.1", String(master.port)])
        try await eventually(timeout: .seconds(10), "the replica is in sync") { (try? replica.cli("ROLE"))?.contains("connected") == true }
        let url = try RedisURL(parsing: master.url)
        let auto = RedisClient(url: url, group: Self.group, durability: .init(replicas: .auto, timeout: .milliseconds(300)), logger: Self.logger)
        defer { auto.close() }
        _ = try await auto.transaction([["SET", "a", "1"]], durable: true)
        replica.signal(SIGSTOP)
        defer { replica.signal(SIGCONT) }
        let started = ContinuousClock.now
        await #expect(throws: RedisError.notReplicated(acked: 0, wanted: 1)) { try await auto.transaction([["SET", "b", "2"]], durable: true) }
        #expect(ContinuousClock.now - started >= .milliseconds(300), "it waited for the replica")
        #expect(try master.cli("GET", "b") == ["2"], "the write is on the master: the caller writes it again")
        _ = try await auto.transaction([["SET", "c", "3"]])  // not durable: no WAIT
        replica.signal(SIGCONT)
        try await eventually(timeout: .seconds(5), "confirmed once the replica is back") {
            (try? await auto.transaction([["SET", "d", "4"]], durable: true)) != nil
        }
        // A master without replicas: auto waits for none.
        let alone = try await RedisServer()
        let single = RedisClient(url: try RedisURL(parsing: alone.url), group: Self.group, durability: .default, logger: Self.logger)
        defer { single.close() }
        _ = try await single.transaction([["SET", "x", "1"]], durable: true)
        let two = RedisClient(url: try RedisURL(parsing: alone.url), group: Self.group, durability: .init(replicas: .count(2), timeout: .milliseconds(50)),
                              logger: Self.logger)
        defer { two.close() }
        await #expect(throws: RedisError.notReplicated(acked: 0, wanted: 2)) { try await two.transaction([["SET", "y", "1"]], durable: true) }
    }

    /// `auto` follows the master's replicas after its connections were made: the new master of
    /// a failover has none until the old one comes back as its replica, and from then on its
    /// writes must wait for it again; a replica that dies leaves a master whose writes pass.
    @Test func autoDurabilityFollowsReplicasThatComeAndGo() async throws {
        let master = try await RedisServer()
        // 2 s for a replica to confirm: 500 ms was missed once by a replica just online while CI
        // ran other suites' processes on the same 2 cores (the write that is not confirmed here
        // is the stopped replica's, which fails whatever the timeout).
        let redis = RedisClient(url: try RedisURL(parsing: master.url), group: Self.group, durability: .init(replicas: .auto, timeout: .milliseconds(2000)),
                                logger: Self.logger)
        defer { redis.close() }
        _ = try await redis.transaction([["SET", "a", "1"]], durable: true)  // connected alone: waits for none
        let replica = try await RedisServer(["--replicaof", "127.0.0.1", String(master.port)])
        // The master lists it as online (what ROLE shows it by), not only the replica connected.
        try await eventually(timeout: .seconds(10), "the master has the replica online") {
            (try? master.cli("INFO", "replication"))?.contains { $0.contains("state=online") } == true
        }
        // The first write after the replica attached learns of it and waits for it too.
        _ = try await redis.transaction([["SET", "b", "2"]], durable: true)
        #expect(try replica.cli("GET", "b") == ["2"], "confirmed by the replica before the answer")
        _ = try await redis.transaction([["SET", "c", "3"]], durable: true)
        #expect(try replica.cli("GET", "c") == ["3"])
        replica.signal(SIGSTOP)
        await #expect(throws: RedisError.notReplicated(acked: 0, wanted: 1)) { try await redis.transaction([["SET", "d", "4"]], durable: true) }
        replica.signal(SIGCONT)
        replica.stop()
        try await eventually(timeout: .seconds(10), "the master saw its replica go") {
            (try? master.cli("INFO", "replication"))?.contains { $0.contains("connected_slaves:0") } == true
        }
        _ = try await redis.transaction([["SET", "e", "5"]], durable: true)  // no replica left to wait for
    }
}
