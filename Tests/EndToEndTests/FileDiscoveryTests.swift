import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import TestSupport

/// `--discovery-provider file`: workers come and go with the manifest, over real HTTP. The
/// router looks at the file every second, so each wait allows a few seconds on a busy machine.
@Suite(.serialized) struct FileDiscoveryTests {
    /// A manifest in a directory of its own, written as config management does (a new file
    /// renamed over the old one).
    final class Manifest: @unchecked Sendable {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("smg-discovery-\(UUID().uuidString)")
        var path: String { directory.appendingPathComponent("workers.json").path }
        init() throws { try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true) }
        deinit { try? FileManager.default.removeItem(at: directory) }

        func write(_ text: String) throws {
            let staging = directory.appendingPathComponent(".workers.json.tmp")
            try text.write(to: staging, atomically: false, encoding: .utf8)
            guard rename(staging.path, path) == 0 else { throw TestFailure("rename: \(errno)") }
        }

        func write(workers: [String]) throws {
            try write(#"{"version": 1, "workers": [\#(workers.joined(separator: ","))]}"#)
        }
    }

    /// The workers the router lists: url → (model, labels).
    static func workers(_ smg: InProcessRouter) throws -> [String: (model: String?, labels: [String: String])] {
        let list = try smg.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
        return Dictionary(uniqueKeysWithValues: list.map { w in
            (w["url"] as? String ?? "", (w["model_id"] as? String, w["labels"] as? [String: String] ?? [:]))
        })
    }

    @Test func workersFollowTheManifestAndOthersAreLeftAlone() async throws {
        let (fixed, a, b) = (try await InProcessWorker(name: "fixed"), try await InProcessWorker(name: "a"), try await InProcessWorker(name: "b"))
        let manifest = try Manifest()
        // Not there yet at start-up: the router starts with its --worker-urls worker only.
        let smg = try await InProcessRouter(["--worker-urls", fixed.url, "--discovery-provider", "file", "--discovery-file", manifest.path,
                                             "--discovery-check-interval-secs", "60", "--policy", "round_robin"])
        #expect(try Self.workers(smg).keys.sorted() == [fixed.url])

        try manifest.write(workers: [#"{"url": "\#(a.url)"}"#, #"{"id": "b", "url": "\#(b.url)", "model_id": "sim-b"}"#, #"{"url": "\#(fixed.url)"}"#])
        try await eventually(timeout: .seconds(10), "the manifest's workers are registered") { try Self.workers(smg).count == 3 }
        let listed = try Self.workers(smg)
        #expect(listed[b.url]?.model == "sim-b" && listed[b.url]?.labels["smg.ai/discovery-id"] == "b")
        #expect(listed[a.url]?.labels["smg.ai/discovery-provider"] == "file")
        #expect(listed[fixed.url]?.labels["smg.ai/discovery-provider"] == nil, "registered by --worker-urls: left as it was")
        try await eventually(timeout: .seconds(15), "requests reach the discovered workers") {
            try smg.chat("hello", model: "sim-b").header("x-sim-worker") == "b"
                && Set(try (0..<4).map { _ in try smg.chat("hello", model: "sim-model").header("x-sim-worker") ?? "" }) == ["a", "fixed"]
        }

        // A worker dropped from the manifest leaves; a changed entry is registered anew; the
        // --worker-urls worker stays although the manifest no longer lists it.
        try manifest.write(workers: [#"{"id": "b", "url": "\#(b.url)", "model_id": "sim-b2"}"#])
        try await eventually(timeout: .seconds(10), "the manifest's change is applied") {
            let now = try Self.workers(smg)
            return now.keys.sorted() == [fixed.url, b.url].sorted() && now[b.url]?.model == "sim-b2"
        }

        // A broken manifest, then none at all: the last good one stays.
        try manifest.write(#"{"version": 1, "workers": [{"url": "\#(a.url)", "typo": 1}]}"#)
        try await eventually(timeout: .seconds(10), "the broken manifest was read") {
            try smg.metric(#"smg_discovery_manifest_reads_total{result="invalid"}"#) >= 1
        }
        #expect(try Self.workers(smg).keys.sorted() == [fixed.url, b.url].sorted(), "a bad manifest removes nothing")
        let missingBefore = try smg.metric(#"smg_discovery_manifest_reads_total{result="missing"}"#)
        #expect(missingBefore >= 1, "missing at start-up")
        try FileManager.default.removeItem(atPath: manifest.path)
        try await eventually(timeout: .seconds(10), "the manifest was found gone") {
            try smg.metric(#"smg_discovery_manifest_reads_total{result="missing"}"#) > missingBefore
        }
        #expect(try Self.workers(smg).keys.sorted() == [fixed.url, b.url].sorted(), "a missing manifest removes nothing")
        // And an empty one empties what discovery registered, nothing else.
        try manifest.write(workers: [])
        try await eventually(timeout: .seconds(10), "an empty manifest removes the discovered workers") { try Self.workers(smg).keys.sorted() == [fixed.url] }
        #expect(try smg.chat("still served").status == 200)
    }

    @Test func badSettingsStopStartUp() async {
        for (args, message) in [
            (["--discovery-file", "/tmp/x.json"], "--discovery-file needs --discovery-provider file"),
            (["--discovery-provider", "file"], "needs --discovery-file"),
            (["--discovery-provider", "kubernetes"], "needs --selector"),
            (["--discovery-provider", "kubernetes", "--discovery-file", "/tmp/x.json"], "--discovery-file needs --discovery-provider file"),
            (["--discovery-provider", "consul"], "expected file or kubernetes"),
            (["--discovery-provider", "file", "--discovery-file", "/tmp/x.json", "--discovery-check-interval-secs", "0"], "--discovery-check-interval-secs"),
        ] {
            do {
                _ = try await InProcessRouter(args)
                Issue.record("started with \(args)")
            } catch {
                #expect("\(error)".contains(message), "\(args): \(error)")
            }
        }
    }
}
