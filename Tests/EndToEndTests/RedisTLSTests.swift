import Foundation
import TestSupport
import Testing

/// History on a Redis that speaks only TLS (`rediss://`), verified against `--ca-cert-paths`,
/// with a client certificate when the server asks for one; certificates made at test time.
@Suite(.serialized) struct RedisTLSTests {
    /// Whether a stored Responses turn made it into the store.
    func stores(_ smg: InProcessRouter) throws -> Bool {
        let r = try smg.respond(#"{"input":"Keep this."}"#)
        guard r.status == 200, r.header("x-smg-history-write") == nil, let id = try r.json()["id"] as? String else { return false }
        return try smg.request("GET", "/v1/responses/\(id)").status == 200
    }

    /// A test CA and what a Redis server (or Sentinel) speaking only TLS needs from it: a
    /// certificate it issued for the server.
    static func serverTLS(_ name: String, requireClientCertificate: Bool = false) throws -> (TestPKI, RedisServer.TLS) {
        let pki = try TestPKI(name)
        let cert = try pki.issue("redis")
        return (pki, .init(certificatePath: cert.certificatePath, keyPath: cert.keyPath, caPath: pki.caPath, requireClientCertificate: requireClientCertificate))
    }

    @Test func historyGoesOverVerifiedTLSAndNotToAServerItCannotTrust() async throws {
        let (pki, tls) = try Self.serverTLS("redis")
        let redis = try await RedisServer(tls: tls)
        #expect(redis.url.hasPrefix("rediss://"))
        let w = try await InProcessWorker(name: "w")
        let history = ["--worker-urls", w.url, "--history-backend", "redis"]
        let trusting = try await InProcessRouter(history + ["--redis-url", redis.url, "--ca-cert-paths", pki.caPath])
        #expect(try stores(trusting))
        #expect(try redis.cli("DBSIZE") != ["0"], "written through TLS")

        // A router that trusts another CA refuses the server: the turn is answered, not stored.
        let stranger = try TestPKI("stranger")
        let wary = try await InProcessRouter(history + ["--redis-url", redis.url, "--ca-cert-paths", stranger.caPath])
        let refused = try wary.respond(#"{"input":"x"}"#)
        #expect(refused.status == 200 && refused.header("x-smg-history-write") == "deferred")
        #expect(try wary.request("GET", "/v1/conversations/conv_x").errorCode == "history_unavailable")
        // redis:// to a TLS port gets no RESP answer: unavailable, nothing sent in clear that it took.
        let plain = try await InProcessRouter(history + ["--redis-url", "redis://127.0.0.1:\(redis.port)"])
        #expect(try plain.respond(#"{"input":"x"}"#).header("x-smg-history-write") == "deferred")
    }

    @Test func aServerThatWantsAClientCertificateGetsTheRouters() async throws {
        let (pki, tls) = try Self.serverTLS("mtls", requireClientCertificate: true)
        let client = try pki.issue("router")
        let redis = try await RedisServer(tls: tls)
        let w = try await InProcessWorker(name: "w")
        let history = ["--worker-urls", w.url, "--history-backend", "redis", "--redis-url", redis.url, "--ca-cert-paths", pki.caPath]
        let without = try await InProcessRouter(history)
        #expect(try !stores(without), "no client certificate, no connection")
        let with = try await InProcessRouter(history + ["--client-cert-path", client.certificatePath, "--client-key-path", client.keyPath])
        #expect(try stores(with))
    }

    /// `rediss-sentinel://`: the Sentinels, the master they name and the new one after a
    /// failover, all over verified TLS.
    @Test func sentinelsAndTheirMastersOverTLSThroughAFailover() async throws {
        let (pki, tls) = try Self.serverTLS("sentinel")
        let redis = try await RedisSentinelDeployment(tls: tls)
        #expect(redis.url.hasPrefix("rediss-sentinel://"))
        let w = try await InProcessWorker(name: "w")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--history-backend", "redis", "--redis-url", redis.url, "--ca-cert-paths", pki.caPath])
        #expect(try stores(smg))
        try redis.forceFailover()
        try await eventually(timeout: .seconds(15), "the Sentinels name the replica") { redis.namedMasterPort() == redis.replica.port }
        try await eventually(timeout: .seconds(10), "turns are stored on the new master") { try stores(smg) }
        #expect(try redis.replica.cli("DBSIZE") != ["0"])
    }
}
