import Foundation
import TestSupport
import NIOConcurrencyHelpers
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// TLS on every hop, with certificates made at test time: an HTTPS gateway, https and mutual-TLS
/// workers, and certificates reloaded on SIGHUP.
@Suite(.serialized) struct TLSTests {
    static let curl: String? = ["/usr/bin/curl", "/bin/curl", "/usr/local/bin/curl"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Waits until the HTTPS router reports a healthy worker.
    func waitReady(_ smg: RouterProcess, _ pki: TestPKI) async throws {
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
            if (try? await TLSClient.request(port: smg.port, caPath: pki.caPath, path: "/readiness"))?.status == 200 { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestFailure("the HTTPS router never became ready")
    }

    @Test func anHTTPSGatewayServesPlainAndStreamingRequests() async throws {
        let pki = try TestPKI("gateway")
        let server = try pki.issue("server")
        let w = try await SimWorkerProcess(name: "w", ["--tokens-per-second", "200"])
        let smg = try await RouterProcess(["--worker-urls", w.url, "--tls-cert-path", server.certificatePath, "--tls-key-path", server.keyPath],
                                          waitForWorkers: false)
        #expect(smg.process.stdout.contains("api=https://"))
        try await waitReady(smg, pki)
        let plain = try await TLSClient.request(port: smg.port, caPath: pki.caPath, method: .POST, path: "/v1/chat/completions",
                                                body: #"{"messages":[{"role":"user","content":"hi"}]}"#)
        #expect(plain.status == 200 && plain.body.contains("chat.completion"))
        #expect(plain.serverSerial == server.serial)
        let stream = try await TLSClient.request(port: smg.port, caPath: pki.caPath, method: .POST, path: "/v1/chat/completions",
                                                 body: #"{"stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
        #expect(stream.status == 200 && stream.body.contains("data: [DONE]") && stream.pieces > 2)
        // A client that trusts another CA does not get through.
        let stranger = try TestPKI("stranger")
        await #expect(throws: (any Error).self) { try await TLSClient.request(port: smg.port, caPath: stranger.caPath, path: "/health") }
        // Plain HTTP to the TLS port gets no HTTP answer: the connection just ends.
        let c = try HTTPConnection(port: smg.port, timeout: 5)
        try c.send("GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        #expect((try? c.readResponse()) == nil)
        #expect(try await TLSClient.request(port: smg.port, caPath: pki.caPath, path: "/health").status == 200, "still serving")
    }

    @Test(.enabled(if: TLSTests.curl != nil, "curl is not installed here")) func curlWithTheCAReachesTheGateway() async throws {
        let pki = try TestPKI("curl")
        let server = try pki.issue("server")
        let smg = try await RouterProcess(["--tls-cert-path", server.certificatePath, "--tls-key-path", server.keyPath])
        func curl(_ args: [String]) throws -> (Int32, String) {
            let p = try TestProcess(URL(fileURLWithPath: TLSTests.curl!), ["-sS", "--max-time", "10"] + args, name: "curl")
            p.process.waitUntilExit()
            return (p.process.terminationStatus, p.stdout)
        }
        let (ok, body) = try curl(["--cacert", pki.caPath, "https://localhost:\(smg.port)/health"])
        #expect(ok == 0 && body.contains("ok"))
        let (refused, _) = try curl(["https://localhost:\(smg.port)/health"])
        #expect(refused != 0, "curl without the CA refuses the certificate")
    }

    @Test func httpsWorkersAreVerifiedAndAForeignCertificateIsNeverSentARequest() async throws {
        let pki = try TestPKI("workers")
        let rogue = try TestPKI("rogue")
        let good = try pki.issue("good")
        let bad = try rogue.issue("bad")
        let a = try await SimWorkerProcess(name: "trusted", ["--tls-cert", good.certificatePath, "--tls-key", good.keyPath])
        let b = try await SimWorkerProcess(name: "foreign", ["--tls-cert", bad.certificatePath, "--tls-key", bad.keyPath])
        #expect(a.url.hasPrefix("https://"))
        let smg = try await RouterProcess(["--worker-urls", a.url, b.url, "--ca-cert-paths", pki.caPath, "--policy", "round_robin",
                                           "--health-check-interval-secs", "1", "--health-failure-threshold", "1"])
        try await eventually(timeout: .seconds(10), "the foreign worker is unhealthy") {
            let workers = try smg.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
            return workers.first { $0["url"] as? String == b.url }?["is_healthy"] as? Bool == false
        }
        for _ in 0..<6 { #expect(try smg.chat("x").header("x-sim-worker") == "trusted") }
        let rogueStats = try await TLSClient.request(port: b.port, caPath: rogue.caPath, path: "/sim/stats")
        #expect(rogueStats.body.contains(#""requests":0"#), "the foreign worker never got a request: \(rogueStats.body)")
        let log = smg.process.stderr
        #expect(log.contains("worker unhealthy") && log.contains(b.url) && log.contains("TLS handshake failed"), "the log says why")
        // Pooled connections carry many requests: one handshake, not one per request.
        let opened = try smg.metric("smg_worker_connections_opened_total")
        for _ in 0..<10 { _ = try smg.chat("x") }
        #expect(try smg.metric("smg_worker_connections_opened_total") - opened <= 1)
    }

    @Test func anHTTPSWorkerAddedOnOneRouterIsServedByTheMesh() async throws {
        let pki = try TestPKI("mesh")
        let cert = try pki.issue("worker")
        let w = try await SimWorkerProcess(name: "tls-w", ["--tls-cert", cert.certificatePath, "--tls-key", cert.keyPath])
        let ports = try (0..<2).map { _ in try freeLoopbackPort() }
        var routers: [RouterProcess] = []
        for i in 0..<2 {
            routers.append(try await RouterProcess(["--ca-cert-paths", pki.caPath, "--enable-mesh", "--mesh-server-name", "r\(i)", "--mesh-host", "127.0.0.1",
                                                   "--mesh-port", String(ports[i]), "--mesh-key-file", MeshMembershipTests.keyFile.path,
                                                   "--mesh-peer-urls", "127.0.0.1:\(ports[1 - i])"]))
        }
        #expect(try routers[0].request("POST", "/workers", body: #"{"url":"\#(w.url)"}"#).status == 202)
        try await eventually(timeout: .seconds(10), "the other router serves through the https worker") {
            try routers[1].chat("x").header("x-sim-worker") == "tls-w"
        }
        let listed = try routers[1].request("GET", "/workers").json()["workers"] as? [[String: Any]]
        #expect(listed?.first?["url"] as? String == w.url)
    }

    @Test func jwtKeysAreFetchedFromAnHTTPSIssuer() async throws {
        let pki = try TestPKI("idp")
        let issuer = try await TestIssuer(certificate: try pki.issue("idp"))
        try await issuer.addKey("k1")
        #expect(issuer.url.hasPrefix("https://"))
        let smg = try await InProcessRouter(["--jwt-issuer", issuer.url, "--jwt-audience", "smg", "--ca-cert-paths", pki.caPath])
        let admin = try await issuer.token(kid: "k1", roles: ["admin"])
        #expect(try smg.request("GET", "/workers", headers: [("authorization", "Bearer " + admin)]).status == 200)
        #expect(issuer.jwksFetches >= 1, "the keys came over https")
    }

    @Test func aMutualTLSWorkerTakesTheRouterOnlyWithItsClientCertificate() async throws {
        let workers = try TestPKI("mtls-workers")
        let clients = try TestPKI("mtls-clients")
        let serverCert = try workers.issue("server")
        let routerCert = try clients.issue("router", commonName: "smg router")
        let w = try await SimWorkerProcess(name: "mtls", ["--tls-cert", serverCert.certificatePath, "--tls-key", serverCert.keyPath,
                                                           "--tls-client-ca", clients.caPath])
        let without = try await RouterProcess(["--worker-urls", w.url, "--ca-cert-paths", workers.caPath, "--health-check-interval-secs", "1",
                                               "--health-failure-threshold", "1"], waitForWorkers: false)
        try await eventually(timeout: .seconds(10), "refused without a client certificate") {
            (try without.request("GET", "/workers").json()["workers"] as? [[String: Any]])?.first?["is_healthy"] as? Bool == false
        }
        #expect(try without.chat("x").status == 503)
        let with = try await RouterProcess(["--worker-urls", w.url, "--ca-cert-paths", workers.caPath,
                                            "--client-cert-path", routerCert.certificatePath, "--client-key-path", routerCert.keyPath])
        let r = try with.chat("x")
        #expect(r.status == 200 && r.header("x-sim-worker") == "mtls")
    }

    @Test func aReloadedCertificateIsSeenByNewConnectionsWhileAnOpenStreamCompletes() async throws {
        let pki = try TestPKI("reload")
        let first = try pki.issue("first")
        let second = try pki.issue("second")
        let live = pki.directory.appendingPathComponent("live.pem").path
        let liveKey = pki.directory.appendingPathComponent("live-key.pem").path
        func install(_ issued: TestPKI.Issued) throws {
            for (from, to) in [(issued.certificatePath, live), (issued.keyPath, liveKey)] {
                try? FileManager.default.removeItem(atPath: to)
                try FileManager.default.copyItem(atPath: from, toPath: to)
            }
        }
        try install(first)
        let w = try await SimWorkerProcess(name: "w", ["--tokens-per-second", "20", "--output-tokens", "40"])
        let smg = try await RouterProcess(["--worker-urls", w.url, "--tls-cert-path", live, "--tls-key-path", liveKey], waitForWorkers: false)
        try await waitReady(smg, pki)
        // A stream of ~2 s starts on the first certificate.
        let pieces = NIOLockedValueBox(0)
        let stream = Task {
            try await TLSClient.request(port: smg.port, caPath: pki.caPath, method: .POST, path: "/v1/chat/completions",
                                        body: #"{"stream":true,"messages":[{"role":"user","content":"hi"}]}"#) { _ in pieces.withLockedValue { $0 += 1 } }
        }
        try await eventually(timeout: .seconds(5), "the stream has begun") { pieces.withLockedValue { $0 } > 0 }
        try install(second)
        smg.process.signal(SIGHUP)
        try await eventually(timeout: .seconds(5), "a new connection gets the new certificate") {
            let serial = try? syncRequestSerial(port: smg.port, caPath: pki.caPath)
            return serial == second.serial
        }
        let finished = try await stream.value
        #expect(finished.status == 200 && finished.body.contains("data: [DONE]"), "the open stream completed")
        #expect(finished.serverSerial == first.serial, "on the certificate it started with")
        // A broken file is refused: the certificate in use stays.
        try "not a certificate".write(toFile: live, atomically: true, encoding: .utf8)
        smg.process.signal(SIGHUP)
        try await eventually(timeout: .seconds(5), "the refusal is logged") { smg.process.stderr.contains("NOT reloaded") }
        let after = try await TLSClient.request(port: smg.port, caPath: pki.caPath, path: "/health")
        #expect(after.status == 200 && after.serverSerial == second.serial, "\(after) vs \(second.serial)")
    }

    /// The serial a fresh connection sees, from synchronous code (for `eventually`).
    func syncRequestSerial(port: Int, caPath: String) throws -> String? {
        let box = NIOLockedValueBox<String??>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let r = try? await TLSClient.request(port: port, caPath: caPath, path: "/health")
            box.withLockedValue { $0 = .some(r?.serverSerial) }
            done.signal()
        }
        done.wait()
        return box.withLockedValue { $0 } ?? nil
    }
}
