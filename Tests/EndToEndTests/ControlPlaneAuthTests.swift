import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Who may change the fleet: control-plane keys, JWTs from an OIDC issuer, `--api-key` alone,
/// and the audit log of every decision. Each test is an attack that used to succeed.
@Suite(.serialized) struct ControlPlaneAuthTests {
    static let keys = ["ops:Operations:admin:admin-secret-1", "viewer:Dashboards:user:user-secret-2"]
    static func bearer(_ s: String) -> [(String, String)] { [("authorization", "Bearer " + s)] }

    func workerCount(_ r: RouterProcess, key: String = "user-secret-2") throws -> Int {
        try r.request("GET", "/workers", headers: Self.bearer(key)).json()["total"] as? Int ?? -1
    }

    @Test func onlyAdminKeysChangeTheFleetOnAnyRouterOfTheMesh() async throws {
        let w = try await SimWorkerProcess(name: "w")
        let attacker = try await SimWorkerProcess(name: "attacker")
        let meshPorts = try (0..<2).map { _ in try freeLoopbackPort() }
        func router(_ i: Int) async throws -> RouterProcess {
            try await RouterProcess(["--worker-urls", w.url, "--control-plane-api-keys"] + Self.keys + [
                "--enable-mesh", "--mesh-server-name", "r\(i)", "--mesh-host", "127.0.0.1", "--mesh-port", String(meshPorts[i]),
                "--mesh-key-file", MeshMembershipTests.keyFile.path, "--mesh-peer-urls", "127.0.0.1:\(meshPorts[1 - i])"])
        }
        let a = try await router(0)
        let b = try await router(1)
        let add = #"{"url":"\#(attacker.url)","model_id":"sim-model"}"#

        let anonymous = try a.request("POST", "/workers", body: add)
        #expect(anonymous.status == 401)
        #expect(anonymous.errorCode == "invalid_credentials")
        #expect(try a.request("POST", "/workers", body: add, headers: Self.bearer("wrong")).status == 401)
        let asUser = try a.request("POST", "/workers", body: add, headers: Self.bearer("user-secret-2"))
        #expect(asUser.status == 403)
        #expect(asUser.errorCode == "insufficient_role")
        #expect(try a.request("POST", "/add_worker?url=\(attacker.url)").status == 401, "the legacy form, as a cross-site HTML form would send it")
        let id = (try a.request("GET", "/workers", headers: Self.bearer("user-secret-2")).json()["workers"] as? [[String: Any]])?.first?["id"] as? String ?? ""
        #expect(try a.request("DELETE", "/workers/\(id)").status == 401)
        #expect(try a.request("DELETE", "/workers/\(id)", headers: Self.bearer("user-secret-2")).status == 403)
        #expect(try a.request("PATCH", "/workers/\(id)", body: #"{"labels":{"x":"y"}}"#, headers: Self.bearer("user-secret-2")).status == 403)
        #expect(try a.request("POST", "/flush_cache", headers: Self.bearer("user-secret-2")).status == 403)
        #expect(try a.request("GET", "/workers").status == 401, "reading the fleet needs a credential too")
        #expect(try a.request("GET", "/ha/status").status == 401)
        #expect(try a.request("GET", "/ha/status", headers: Self.bearer("user-secret-2")).status == 200)
        #expect(try a.request("GET", "/health").status == 200, "probes stay open")
        // Nothing changed anywhere; inference is not the control plane's business.
        #expect(try workerCount(a) == 1 && workerCount(b) == 1)
        #expect(try a.chat("x").header("x-sim-worker") == "w")

        // An admin's change is made and replicated.
        #expect(try a.request("POST", "/workers", body: #"{"url":"\#(attacker.url)"}"#, headers: Self.bearer("admin-secret-1")).status == 202)
        try await eventually(timeout: .seconds(10), "the admin's worker reaches the other router") { try workerCount(b) == 2 }

        // The audit log names who did what, and never a secret.
        try await eventually(timeout: .seconds(5), "audit lines are written") { (a.process.stdout + a.process.stderr).contains("principal=ops") }
        let log = a.process.stdout + a.process.stderr
        let audit = log.split(separator: "\n").filter { $0.contains("audit") }
        #expect(audit.contains { $0.contains("result=denied") && $0.contains("principal=viewer") && $0.contains("POST /workers") })
        #expect(audit.contains { $0.contains("result=allowed") && $0.contains("principal=ops") && $0.contains("role=admin") })
        #expect(audit.contains { $0.contains("result=denied") && $0.contains("principal=unauthenticated") && $0.contains("/add_worker") })
        #expect(!log.contains("admin-secret-1") && !log.contains("user-secret-2"))
    }

    /// The audit log used to go quiet with --log-level warn, and recorded neither deletions of
    /// stored history nor fleet changes another router's write made. It has its own level now.
    @Test func theAuditLogRecordsDeletionsAndMeshChangesWhateverTheLogLevel() async throws {
        let w = try await SimWorkerProcess(name: "w")
        let added = try await SimWorkerProcess(name: "added")
        let meshPorts = try (0..<2).map { _ in try freeLoopbackPort() }
        func router(_ i: Int) async throws -> RouterProcess {
            try await RouterProcess(["--worker-urls", w.url, "--log-level", "warn", "--control-plane-api-keys"] + Self.keys + [
                "--tenant-api-key", "acme:tenant-key",
                "--enable-mesh", "--mesh-server-name", "r\(i)", "--mesh-host", "127.0.0.1", "--mesh-port", String(meshPorts[i]),
                "--mesh-key-file", MeshMembershipTests.keyFile.path, "--mesh-peer-urls", "127.0.0.1:\(meshPorts[1 - i])"])
        }
        let a = try await router(0)
        let b = try await router(1)
        let tenant = Self.bearer("tenant-key")
        let c = try a.request("POST", "/v1/conversations", body: "{}", headers: tenant).json()["id"] as? String ?? ""
        #expect(try a.request("DELETE", "/v1/conversations/\(c)", headers: tenant).status == 200)
        #expect(try a.request("DELETE", "/v1/conversations/\(c)", headers: tenant).status == 404)
        try await eventually(timeout: .seconds(5), "the deletions are audited") {
            let log = a.process.stderr + a.process.stdout
            return log.contains("DELETE /v1/conversations/\(c)") && log.contains("result=deleted") && log.contains("result=not_found") && log.contains("tenant=acme")
        }
        try await eventually(timeout: .seconds(10), "the mesh formed") {
            (try a.request("GET", "/ha/status", headers: Self.bearer("user-secret-2")).json()["alive"] as? Int) == 2
        }
        #expect(try a.request("POST", "/workers", body: #"{"url":"\#(added.url)","model_id":"sim-model"}"#, headers: Self.bearer("admin-secret-1")).status == 202)
        try await eventually(timeout: .seconds(5), "b audits the worker a added, naming a") {
            let log = b.process.stderr + b.process.stdout
            return log.contains("change=worker added") && log.contains("peer=r0") && log.contains(added.url)
        }
    }

    @Test func jwtsFromTheConfiguredIssuerCarryRoles() async throws {
        let issuer = try await TestIssuer()
        try await issuer.addKey("k1")
        let w = try await SimWorkerProcess(name: "w")
        let other = try await SimWorkerProcess(name: "other")
        let smg = try await RouterProcess(["--worker-urls", w.url, "--jwt-issuer", issuer.url, "--jwt-audience", "smg",
                                           "--jwt-role-mapping", "Gateway.Admin=admin", "Gateway.User=user"])
        let add = #"{"url":"\#(other.url)"}"#
        let admin = try await issuer.token(kid: "k1", roles: ["Gateway.Admin"])
        let user = try await issuer.token(kid: "k1", sub: "bob", roles: ["Gateway.User"])

        #expect(try smg.request("POST", "/workers", body: add, headers: Self.bearer(user)).status == 403)
        #expect(try smg.request("GET", "/workers", headers: Self.bearer(user)).status == 200)
        let expired = try await issuer.token(kid: "k1", roles: ["Gateway.Admin"], expiresIn: -120)
        #expect(try smg.request("POST", "/workers", body: add, headers: Self.bearer(expired)).errorCode == "invalid_token")
        let elsewhere = try await issuer.token(kid: "k1", roles: ["Gateway.Admin"], audience: "another-api")
        #expect(try smg.request("POST", "/workers", body: add, headers: Self.bearer(elsewhere)).status == 401)
        let forged = try await issuer.token(kid: "k1", roles: ["Gateway.Admin"], issuer: "http://evil.example")
        #expect(try smg.request("POST", "/workers", body: add, headers: Self.bearer(forged)).status == 401)
        let unmapped = try await issuer.token(kid: "k1", roles: ["admin"])
        #expect(try smg.request("POST", "/workers", body: add, headers: Self.bearer(unmapped)).status == 403, "only mapped IdP roles count")
        // A token signed by a key the issuer never published.
        let rogue = try await TestIssuer()
        try await rogue.addKey("k1")
        let foreign = try await rogue.token(kid: "k1", roles: ["Gateway.Admin"], issuer: issuer.url)
        #expect(try smg.request("POST", "/workers", body: add, headers: Self.bearer(foreign)).status == 401)
        #expect(try smg.request("GET", "/workers", headers: Self.bearer(admin)).json()["total"] as? Int == 1)

        let ok = try smg.request("POST", "/workers", body: add, headers: Self.bearer(admin))
        #expect(ok.status == 202)
        #expect(try smg.request("GET", "/workers", headers: Self.bearer(admin)).json()["total"] as? Int == 2)
        #expect(!(smg.process.stdout + smg.process.stderr).contains(admin), "tokens are never logged")
    }

    @Test func theAPIKeyAloneGuardsTheControlPlaneAndTheForwardedInfoRoutes() async throws {
        let w = try await InProcessWorker(name: "w")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--api-key", "sekrit"])
        #expect(try smg.request("POST", "/workers", body: #"{"url":"http://127.0.0.1:9"}"#).status == 401)
        #expect(try smg.request("GET", "/get_server_info").status == 401, "forwarded with the router's key, so it needs it")
        #expect(try smg.request("GET", "/get_model_info", headers: Self.bearer("sekrit")).status == 200)
        #expect(try smg.request("GET", "/v1/models").status == 401)
        #expect(try smg.request("GET", "/readiness").status == 200)
        #expect(try smg.request("GET", "/workers", headers: Self.bearer("sekrit")).status == 200)
    }

    /// Configurations that leave something open, or make every inference client an admin,
    /// say so once at start instead of running silently.
    @Test func startUpWarnsWhenOneCredentialGuardsBothPlanesOrOnlyOneIsGuarded() async throws {
        let apiKeyOnly = try await RouterProcess(["--api-key", "k"])
        let controlOnly = try await RouterProcess(["--control-plane-api-keys", "ops:Ops:admin:secret"])
        let both = try await RouterProcess(["--api-key", "k", "--control-plane-api-keys", "ops:Ops:admin:secret"])
        func log(_ r: RouterProcess) -> String { r.process.stderr + r.process.stdout }
        #expect(log(apiKeyOnly).contains("--api-key is the only credential"))
        #expect(log(controlOnly).contains("inference and stored conversations and responses") && log(controlOnly).contains("is open"))
        #expect(!log(both).contains("only credential") && !log(both).contains("is open"))
        let tenantsOnly = try await RouterProcess(["--tenant-api-key", "acme:k"])
        #expect(log(tenantsOnly).contains("only --tenant-api-key is configured"))
        // With no credential at all on loopback (the drop-in default, `smg demo`): nothing to warn
        // about. (It said "only --tenant-api-key is configured" there.)
        let open = try await RouterProcess([])
        #expect(!log(open).contains("warning"), "\(log(open))")
        // The key from the environment keeps it out of `ps`.
        let fromEnv = try await RouterProcess([], environment: ["SMG_API_KEY": "from-env"])
        #expect(try fromEnv.request("GET", "/v1/models").status == 401)
        #expect(try fromEnv.request("GET", "/v1/models", headers: [("authorization", "Bearer from-env")]).status != 401)
    }

    @Test func refusedRequestsAreAnsweredBeforeTheirBodyIsRead() async throws {
        let smg = try await InProcessRouter(["--control-plane-api-keys"] + Self.keys)
        // A 100 MB body is announced and never sent: the answer comes at once.
        for (path, status) in [("/workers", 401), ("/no/such/route", 404)] {
            let c = try HTTPConnection(port: smg.port, timeout: 5)
            try c.send("POST \(path) HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n")
            let r = try c.readResponse()
            #expect(r.status == status)
            #expect(r.header("connection") == "close")
        }
        let c = try HTTPConnection(port: smg.port, timeout: 5)
        try c.send("POST /workers HTTP/1.1\r\nhost: x\r\nauthorization: Bearer admin-secret-1\r\ncontent-length: 2000000\r\n\r\n")
        #expect(try c.readResponse().status == 413, "control routes take at most 1 MiB")
        // A request pipelined behind a refused one on the same write is dropped with the
        // connection, and nothing stays counted as in flight.
        let p = try HTTPConnection(port: smg.port, timeout: 5)
        try p.send("POST /nope HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\n\r\n{\"pro")
        #expect(try p.readResponse().status == 404)
        try await eventually(timeout: .seconds(5), "no request is left in flight") {
            try smg.metric("smg_http_requests_active") == 0
        }
        // A request without a body keeps its connection after a refusal.
        let k = try HTTPConnection(port: smg.port, timeout: 5)
        #expect(try k.request("GET", "/workers").status == 401)
        #expect(try k.request("GET", "/workers", headers: Self.bearer("user-secret-2")).status == 200)
    }
}
