import Foundation
import TestSupport
import Testing

/// `--enable-igw`: one router (or a mesh of them) serving several models, each with its own
/// workers and its own policy, named by its workers' `policy` label at registration.
@Suite(.serialized) struct MultiModelTests {
    struct Models {
        var alpha: [InProcessWorker] = []
        var beta: [InProcessWorker] = []
    }

    static func models() async throws -> Models {
        var m = Models()
        for i in 0..<2 { m.alpha.append(try await InProcessWorker(name: "alpha\(i)", ["--model-id", "alpha"])) }
        for i in 0..<2 { m.beta.append(try await InProcessWorker(name: "beta\(i)", ["--model-id", "beta"])) }
        return m
    }

    /// Registers alpha's workers with round_robin and beta's with consistent_hashing, through `r`.
    static func register(_ m: Models, through r: any RouterUnderTest) throws {
        for w in m.alpha {
            #expect(try r.request("POST", "/workers", body: #"{"url":"\#(w.url)","model_id":"alpha","labels":{"policy":"round_robin"}}"#).status == 202)
        }
        for w in m.beta {
            #expect(try r.request("POST", "/workers", body: #"{"url":"\#(w.url)","model_id":"beta","labels":{"policy":"consistent_hashing"}}"#).status == 202)
        }
    }

    /// What `r` does with each model: alpha alternates over both its workers, beta keeps each
    /// routing key on one worker, and nothing crosses models.
    static func expectEachModelRoutedByItsOwnPolicy(_ r: any RouterUnderTest) throws {
        var alpha: [String] = []
        for _ in 0..<6 { alpha.append(try r.chat("hi", model: "alpha").header("x-sim-worker") ?? "?") }
        #expect(Set(alpha) == ["alpha0", "alpha1"] && zip(alpha, alpha.dropFirst()).allSatisfy { $0 != $1 }, "alpha goes round robin: \(alpha)")
        var beta: [String: Set<String>] = [:]
        for _ in 0..<3 {
            for key in 0..<6 {
                let w = try r.chat("hi", model: "beta", headers: [("X-SMG-Routing-Key", "user-\(key)")]).header("x-sim-worker") ?? "?"
                beta["user-\(key)", default: []].insert(w)
            }
        }
        #expect(beta.values.allSatisfy { $0.count == 1 && $0.first!.hasPrefix("beta") }, "beta keeps each key on one of its workers: \(beta)")
        let metrics = try r.metrics()
        #expect(metrics.contains(#"smg_policy_decisions_total{policy="round_robin",model="alpha""#), "\(metrics)")
        #expect(metrics.contains(#"smg_policy_decisions_total{policy="consistent_hashing",model="beta""#))
    }

    @Test func oneRouterServesTwoModelsEachWithItsOwnPolicy() async throws {
        let m = try await Self.models()
        let r = try await InProcessRouter(["--enable-igw", "--policy", "random"])
        try Self.register(m, through: r)
        try await eventually(timeout: .seconds(15), "the workers are healthy") { try r.request("GET", "/readiness").status == 200 }
        try await eventually(timeout: .seconds(15), "every worker is healthy") {
            (try r.request("GET", "/workers").json()["workers"] as? [[String: Any]])?.allSatisfy { $0["is_healthy"] as? Bool == true } == true
        }
        try Self.expectEachModelRoutedByItsOwnPolicy(r)
        let models = try #require(try r.request("GET", "/v1/models").json()["data"] as? [[String: Any]])
        #expect(Set(models.compactMap { $0["id"] as? String }) == ["alpha", "beta"])
        let unknown = try r.chat("hi", model: "gamma")
        #expect(unknown.status == 404 && unknown.errorCode == "model_not_found")
        let bad = try r.request("POST", "/workers", body: #"{"url":"http://127.0.0.1:1","model_id":"x","labels":{"policy":"fastest"}}"#)
        #expect(bad.status == 400 && bad.errorCode == "invalid_policy")
    }

    @Test func aMeshOfRoutersServesTheModelsRegisteredOnAnyOfThem() async throws {
        let m = try await Self.models()
        let ports = try (0..<2).map { _ in try freeLoopbackPort() }
        var routers: [any RouterUnderTest] = []
        for i in 0..<2 {
            routers.append(try await InProcessRouter(["--enable-igw", "--policy", "random", "--enable-mesh", "--mesh-server-name", "r\(i)",
                                                    "--mesh-host", "127.0.0.1", "--mesh-port", String(ports[i]), "--mesh-peer-urls", "127.0.0.1:\(ports[1 - i])"]))
        }
        try Self.register(m, through: routers[0])
        try await eventually(timeout: .seconds(15), "r1 knows all four workers, healthy") {
            let workers = try routers[1].request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
            return workers.count == 4 && workers.allSatisfy { $0["is_healthy"] as? Bool == true }
        }
        try Self.expectEachModelRoutedByItsOwnPolicy(routers[1])
    }
}
