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

@Suite(.serialized) struct RedisClientTests {
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    func client(_ url: String, pool: Int = 4, timeout: TimeAmount = .seconds(2)) throws -> RedisClient {
        RedisClient(url: try RedisURL(parsing: url), group: Self.group, maxConnections: pool, commandTimeout: timeout,
                    logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    @Test func commandsRoundTripBinarySafe() async throws {
        let server = try await RedisServer()
        let redis = try client("redis://127.0.0.1:\(server.port)")
        defer { redis.close() }
        let value: [UInt8] = [0, 13, 10, 36, 42, 255] + Array("é\r\n".utf8)
        #expect(try await redis.send([Array("SET".utf8), Array("k\r\n".utf8), value]) == .status("OK"))
        #expect(try await redis.send([Array("GET".utf8), Array("k\r\n".utf8)]) == .string(value))
        #expect(try await redis.send(["GET", "missing"]) == .null)
        #expect(try await redis.send(["INCRBY", "n", "41"]) == .integer(41))
        #expect(try await redis.send(["RPUSH", "l", "a", "", "c"]) == .integer(3))
        #expect(try await redis.send(["LRANGE", "l", "0", "-1"]) == .array([.string(Array("a".utf8)), .string([]), .string(Array("c".utf8))]))
        if case .error(let message) = try await redis.send(["INCR", "l"]) { #expect(message.contains("WRONGTYPE")) } else { Issue.record("expected an error reply") }
        #expect(try await redis.send(["PING"]) == .status("PONG"), "an error reply leaves the connection usable")
    }

    @Test func manyCommandsInFlightAreAnsweredInOrder() async throws {
        let server = try await RedisServer()
        let redis = try client("redis://127.0.0.1:\(server.port)", pool: 3)
        defer { redis.close() }
        let replies = try await withThrowingTaskGroup(of: (Int, RedisValue).self) { group in
            for i in 0..<2000 {
                group.addTask { (i, try await redis.send(["ECHO", "value-\(i)"])) }
            }
            var out: [Int: RedisValue] = [:]
            for try await (i, r) in group { out[i] = r }
            return out
        }
        #expect(replies.count == 2000)
        #expect(replies.allSatisfy { $0.value == .string(Array("value-\($0.key)".utf8)) }, "every reply matches its own command")
        let clients = try await redis.send(["CLIENT", "LIST"]).text?.split(separator: "\n").count ?? 0
        #expect(clients <= 3 + 1, "the pool stays within its bound: \(clients) connections")
    }

    @Test func aTransactionIsAllOrNothing() async throws {
        let server = try await RedisServer()
        let redis = try client("redis://127.0.0.1:\(server.port)")
        defer { redis.close() }
        let results = try await redis.transaction([["HSET", "item:1", "id", "1"], ["ZADD", "items", "5", "item:1"]])
        #expect(results == [.integer(1), .integer(1)])
        // A malformed command aborts the whole transaction: nothing of it is applied.
        do {
            _ = try await redis.transaction([["HSET", "item:2", "id", "2"], ["ZADD", "items"]])
            Issue.record("a malformed transaction was accepted")
        } catch let error as RedisError {
            guard case .refused(let why) = error else { Issue.record("refused expected, got \(error)"); return }
            #expect(why.contains("wrong number of arguments"), "a refusal naming the bad command, not an outage (a 500, not a 503): \(why)")
        }
        #expect(try await redis.send(["EXISTS", "item:2"]) == .integer(0))
    }

    @Test func authAndDatabaseFromTheURL() async throws {
        let server = try await RedisServer(["--requirepass", "s3cret"])
        let denied = try client("redis://127.0.0.1:\(server.port)")
        if case .error(let message) = try await denied.send(["SET", "a", "1"]) { #expect(message.contains("NOAUTH")) } else { Issue.record("expected NOAUTH") }
        denied.close()
        let db3 = try client("redis://:s3cret@127.0.0.1:\(server.port)/3")
        defer { db3.close() }
        #expect(try await db3.send(["SET", "where", "three"]) == .status("OK"))
        let db0 = try client("redis://default:s3cret@127.0.0.1:\(server.port)")
        defer { db0.close() }
        #expect(try await db0.send(["GET", "where"]) == .null)
        #expect(try await db0.send(["SELECT", "3"]) == .status("OK"))
        #expect(try await db0.send(["GET", "where"]) == .string(Array("three".utf8)))
    }

    @Test func aRedisThatGoesAwayFailsFastAndIsReconnectedWhenBack() async throws {
        let server = try await RedisServer()
        let redis = try client("redis://127.0.0.1:\(server.port)", timeout: .milliseconds(500))
        defer { redis.close() }
        #expect(try await redis.send(["PING"]) == .status("PONG"))
        server.stop()
        let started = ContinuousClock.now
        await #expect(throws: RedisError.self) { try await redis.send(["PING"]) }
        await #expect(throws: RedisError.self) { try await redis.send(["PING"]) }
        #expect(ContinuousClock.now - started < .seconds(2), "failed within the command timeout, not hung")
        try await server.start()
        // Back within the reconnection backoff (at most 5 s), without a new client.
        let deadline = ContinuousClock.now + .seconds(8)
        var back = false
        while ContinuousClock.now < deadline, !back {
            back = (try? await redis.send(["PING"])) == .status("PONG")
            if !back { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(back)
    }

    @Test func aSlowReplyTimesOutAndTheNextCommandStillWorks() async throws {
        let server = try await RedisServer()
        let redis = try client("redis://127.0.0.1:\(server.port)", pool: 1, timeout: .milliseconds(300))
        defer { redis.close() }
        let started = ContinuousClock.now
        // BLPOP on an empty list holds the reply for a second.
        await #expect(throws: RedisError.timedOut) { try await redis.send(["BLPOP", "empty", "1"]) }
        #expect(ContinuousClock.now - started < .milliseconds(900))
        // The timed-out connection was dropped; the next command opens a new one.
        let deadline = ContinuousClock.now + .seconds(5)
        var ok = false
        while ContinuousClock.now < deadline, !ok { ok = (try? await redis.send(["PING"])) == .status("PONG") }
        #expect(ok)
    }

    @Test func redisURLs() throws {
        let u = try RedisURL(parsing: "redis://user:p%40ss@db.internal:6380/2")
        #expect(u.server == .direct(.init(host: "db.internal", port: 6380)) && u.user == "user" && u.password == "p@ss" && u.database == 2)
        #expect(try RedisURL(parsing: "redis://127.0.0.1").server == .direct(.init(host: "127.0.0.1", port: 6379)))
        #expect(try RedisURL(parsing: "redis://[::1]").server == .direct(.init(host: "::1", port: 6379)))
        for bad in ["http://x", "redis://h:99999", "redis://h/x", "rediss:/h", "redis+tls://h"] {
            #expect(throws: ConfigError.self, "\(bad)") { try RedisURL(parsing: bad) }
        }
        #expect(!RedisURL.redacted("redis://u:secret@h:1").contains("secret"))
        let secure = try RedisURL(parsing: "rediss://:pw@h:6380")
        #expect(secure.tls && secure.server == .direct(.init(host: "h", port: 6380)) && secure.description == "rediss://h:6380/0")
        #expect(try !RedisURL(parsing: "redis://h").tls)
        let sentinels = try RedisURL(parsing: "rediss-sentinel://h1,h2#m")
        #expect(sentinels.tls && sentinels.description == "rediss-sentinel://h1:26379,h2:26379/0#m")
    }
}
