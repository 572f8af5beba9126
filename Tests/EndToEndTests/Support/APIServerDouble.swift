import Foundation
import TestSupport

/// The Kubernetes API server double (`Tests/Kubernetes/apiserver-double.py`, stdlib Python) over
/// TLS with a certificate of a test CA, and a kubeconfig that points a router at it. Pods are
/// put, terminated and deleted through the double's controls (plain HTTP on a second port).
final class APIServerDouble: @unchecked Sendable {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let process: TestProcess
    let port: Int
    let controlPort: Int
    let pki: TestPKI
    let directory: URL
    var tokensPath: String { directory.appendingPathComponent("accepted-tokens").path }
    var server: String { "https://127.0.0.1:\(port)" }

    init(tokens: [String] = ["t1"], bookmarkSecs: Double = 1) async throws {
        pki = try TestPKI("apiserver")
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("smg-k8s-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let leaf = try pki.issue("apiserver")
        try (tokens.joined(separator: "\n") + "\n").write(toFile: directory.appendingPathComponent("accepted-tokens").path, atomically: true, encoding: .utf8)
        process = try TestProcess(URL(fileURLWithPath: "/usr/bin/python3"), [
            Self.root.appendingPathComponent("Tests/Kubernetes/apiserver-double.py").path, "--cert", leaf.certificatePath, "--key", leaf.keyPath,
            "--token-file", directory.appendingPathComponent("accepted-tokens").path, "--bookmark-secs", "\(bookmarkSecs)",
        ], name: "apiserver double")
        let words = try await process.waitForLine(containing: "listening").split(separator: " ")
        guard words.count == 4, let p = Int(words[1]), let c = Int(words[3]) else { throw TestFailure("double said \(words)") }
        (port, controlPort) = (p, c)
    }

    deinit {
        process.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Which bearer tokens the double accepts from now on.
    func accept(_ tokens: [String]) throws {
        try (tokens.joined(separator: "\n") + "\n").write(toFile: tokensPath, atomically: true, encoding: .utf8)
    }

    /// A kubeconfig for this double: the CA as data, the user's token inline or from a file.
    func kubeconfig(token: String? = "t1", tokenFile: String? = nil) throws -> String {
        let ca = Data(try String(contentsOfFile: pki.caPath, encoding: .utf8).utf8).base64EncodedString()
        let user = tokenFile.map { "tokenFile: \($0)" } ?? "token: \(token ?? "")"
        let text = """
            apiVersion: v1
            kind: Config
            clusters:
            - name: double
              cluster:
                server: \(server)
                certificate-authority-data: \(ca)
            users:
            - name: smg
              user:
                \(user)
            contexts:
            - name: test
              context: {cluster: double, user: smg}
            current-context: test
            """
        let path = directory.appendingPathComponent("kubeconfig-\(UUID().uuidString)").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private func control(_ method: String, _ path: String, _ body: [String: Any]? = nil) throws -> HTTPResponse {
        let data = try body.map { Array(try JSONSerialization.data(withJSONObject: $0)) }
        let response = try HTTPClient.request(port: controlPort, method: method, path: "/_double/" + path,
                                              headers: [("content-type", "application/json")], body: data)
        guard response.status < 300 else { throw TestFailure("double \(method) \(path): \(response.status)") }
        return response
    }

    /// Creates or replaces a pod.
    func put(_ name: String, namespace: String = "llm", labels: [String: String], ip: String?, ready: Bool = true, phase: String = "Running",
             annotations: [String: String] = [:]) throws {
        var status: [String: Any] = ["phase": phase, "conditions": [["type": "Ready", "status": ready ? "True" : "False"]]]
        if let ip { status["podIP"] = ip }
        _ = try control("POST", "pods", ["metadata": ["name": name, "namespace": namespace, "labels": labels, "annotations": annotations], "status": status])
    }

    /// Starts the pod's graceful deletion (`deletionTimestamp`).
    func terminate(_ name: String, namespace: String = "llm") throws { _ = try control("POST", "pods/\(namespace)/\(name)/terminate") }
    func delete(_ name: String, namespace: String = "llm") throws { _ = try control("DELETE", "pods/\(namespace)/\(name)") }
    /// Forgets every event so far: a watch from an older version gets 410.
    func compact() throws { _ = try control("POST", "compact") }
    /// Cuts every open watch; returns how many there were.
    @discardableResult func breakWatches() throws -> Int { try control("POST", "break").json()["broken"] as? Int ?? 0 }
    func stats() throws -> [String: Any] { try control("GET", "stats").json() }
    func churn(pods: Int, rate: Int, seconds: Int, labels: [String: String], namespace: String = "llm") throws {
        _ = try control("POST", "churn", ["pods": pods, "rate": rate, "seconds": seconds, "labels": labels, "namespace": namespace])
    }
}
