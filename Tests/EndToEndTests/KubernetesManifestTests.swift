import Foundation
@testable import Node
import Testing
import TestSupport

/// `cluster/k8s/`: every manifest validates against the Kubernetes schemas (kubernetes-validate,
/// strict, the newest schema it has and 1.30, the oldest whose `preStop.sleep` the router uses),
/// the ConfigMap's `smg.yaml` starts a router with the environment the Deployment gives it, and
/// the parts that must agree do: the shutdown budget, the probes, the discovery permissions.
@Suite struct KubernetesManifestTests {
    static let python = KubernetesDiscoveryTests.python
    static let directory = APIServerDouble.root.appendingPathComponent("cluster/k8s")

    static func run(_ arguments: [String]) async throws -> (status: Int32?, output: String) {
        let process = try TestProcess(URL(fileURLWithPath: python ?? "/usr/bin/python3"), arguments, name: "python")
        let status = await process.waitForExit(timeout: .seconds(120))
        return (status, process.stdout + process.stderr)
    }

    /// Every document of every manifest, as JSON objects.
    static func documents() async throws -> [[String: Any]] {
        let (status, output) = try await run(["-c", "import glob, json, sys, yaml; print(json.dumps([d for f in sorted(glob.glob(sys.argv[1] + '/*.yaml')) for d in yaml.safe_load_all(open(f)) if d]))", directory.path])
        guard status == 0, let docs = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]] else { throw TestFailure("yaml: \(output)") }
        return docs
    }

    static func find(_ docs: [[String: Any]], _ kind: String, _ name: String) -> [String: Any]? {
        docs.first { $0["kind"] as? String == kind && ($0["metadata"] as? [String: Any])?["name"] as? String == name }
    }

    static let enabled = python != nil || ProcessInfo.processInfo.environment["CI"] != nil

    @Test(.enabled(if: enabled, "no SMG_TEST_PYTHON with kubernetes-validate (./dev test makes one)"))
    func everyManifestValidatesAgainstTheSchemas() async throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.directory.path).filter { $0.hasSuffix(".yaml") }.sorted()
        #expect(files.count >= 8, "\(files)")
        let validate = URL(fileURLWithPath: Self.python ?? "/usr/bin/python3").deletingLastPathComponent().appendingPathComponent("kubernetes-validate").path
        for version in [[], ["-k", "1.30.0"]] {
            let process = try TestProcess(URL(fileURLWithPath: validate), ["--strict"] + version + files.map { Self.directory.appendingPathComponent($0).path },
                                          name: "kubernetes-validate")
            let status = await process.waitForExit(timeout: .seconds(120))
            #expect(status == 0, "kubernetes-validate \(version): \(process.stdout) \(process.stderr)")
        }
    }

    @Test(.enabled(if: enabled, "no SMG_TEST_PYTHON with PyYAML (./dev test makes one)"))
    func theConfigMapStartsARouterAndThePartsAgree() async throws {
        let docs = try await Self.documents()
        let config = try #require((Self.find(docs, "ConfigMap", "smg-config")?["data"] as? [String: String])?["smg.yaml"])
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("smg-k8s-\(UUID().uuidString).yaml")
        try config.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }

        // The environment router.yaml gives each pod, with a real key in place of the placeholder.
        let deployment = try #require(Self.find(docs, "Deployment", "smg"))
        let pod = try #require(((deployment["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"] as? [String: Any])
        let container = try #require((pod["containers"] as? [[String: Any]])?.first)
        let envNames = Set((container["env"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String })
        #expect(envNames.isSuperset(of: ["POD_NAME", "POD_IP", "SMG_MESH_ADVERTISE_HOST", "SMG_MESH_KEY", "SMG_API_KEY"]), "\(envNames)")
        let environment = ["POD_NAME": "smg-abc", "POD_IP": "10.1.2.3", "SMG_MESH_ADVERTISE_HOST": "10.1.2.3", "SMG_MESH_SERVER_NAME": "smg-abc",
                           "SMG_MESH_KEY": String(repeating: "ab", count: 32), "SMG_API_KEY": "k"]
        let loaded = try RouterConfig.load(arguments: ["--config", file.path], environment: environment)
        #expect(loaded.kubernetes != nil && loaded.mesh?.advertise == "10.1.2.3:39527" && loaded.mesh?.keyring != nil)
        // The placeholder in secret.yaml stops start-up instead of running unsealed.
        let secret = try #require(Self.find(docs, "Secret", "smg-secrets")?["stringData"] as? [String: String])
        var placeholder = environment
        placeholder["SMG_MESH_KEY"] = secret["mesh-key"]
        #expect(throws: (any Error).self) { try RouterConfig.load(arguments: ["--config", file.path], environment: placeholder) }

        // Shutdown: the pod's grace covers the preStop pause and the router's drain.
        let grace = try #require(pod["terminationGracePeriodSeconds"] as? Int)
        let pause = ((container["lifecycle"] as? [String: Any])?["preStop"] as? [String: Any]).flatMap { ($0["sleep"] as? [String: Any])?["seconds"] as? Int } ?? 0
        #expect(grace >= loaded.shutdownGracePeriodSecs + pause + 5, "terminationGracePeriodSeconds \(grace) < drain \(loaded.shutdownGracePeriodSecs) + preStop \(pause) + 5")
        #expect((container["readinessProbe"] as? [String: Any]).flatMap { ($0["httpGet"] as? [String: Any])?["path"] as? String } == "/readiness")
        #expect((container["livenessProbe"] as? [String: Any]).flatMap { ($0["httpGet"] as? [String: Any])?["path"] as? String } == "/liveness")

        // The Role grants exactly get, list and watch on pods; the pods carry the router selector.
        let rules = try #require(Self.find(docs, "Role", "smg-pod-discovery")?["rules"] as? [[String: Any]])
        #expect(rules.count == 1 && rules[0]["resources"] as? [String] == ["pods"] && Set(rules[0]["verbs"] as? [String] ?? []) == ["get", "list", "watch"])
        let labels = ((deployment["spec"] as? [String: Any])?["template"] as? [String: Any]).flatMap { ($0["metadata"] as? [String: Any])?["labels"] as? [String: String] } ?? [:]
        #expect(loaded.kubernetes?.routers.map { $0.matches(labels) } == true, "the router pods carry --router-selector's labels")
        let workerLabels = (Self.find(docs, "Deployment", "sglang-worker")?["spec"] as? [String: Any]).flatMap {
            (($0["template"] as? [String: Any])?["metadata"] as? [String: Any])?["labels"] as? [String: String]
        } ?? [:]
        #expect(loaded.kubernetes?.workers.map { $0.matches(workerLabels) } == true, "the worker pods carry --selector's labels")
    }
}
