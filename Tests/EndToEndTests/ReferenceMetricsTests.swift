import Foundation
import TestSupport
import Testing

/// smg's /metrics against the reference gateway's: every family the reference exposes for a
/// feature smg has must be there with the same type and label names (dashboards and alerts made
/// for the reference work unchanged), the ones listed absent must not pretend to be there, and
/// the whole exposition passes `promtool check metrics`.
@Suite(.serialized) struct ReferenceMetricsTests {
    /// One line of `Tests/Reference/smg-1.13.0-metric-families.txt`.
    struct Family: CustomStringConvertible {
        let name, type: String
        let labels: Set<String>
        let same: Bool
        var description: String { "\(name) \(type) {\(labels.sorted().joined(separator: ","))}" }
    }

    static func referenceFamilies() throws -> [Family] {
        let text = try String(contentsOf: root.appendingPathComponent("Tests/Reference/smg-1.13.0-metric-families.txt"), encoding: .utf8)
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
            let f = line.split(separator: " ", maxSplits: 3).map(String.init)
            return Family(name: f[0], type: f[1], labels: f[2] == "-" ? [] : Set(f[2].split(separator: ",").map(String.init)), same: f[3] == "same")
        }
    }

    /// The families of an exposition: type from `# TYPE`, label names from every sample.
    static func families(in text: String) -> [String: (type: String, labels: Set<String>)] {
        var out: [String: (type: String, labels: Set<String>)] = [:]
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let f = line.split(separator: " ")
                out[String(f[2])] = (String(f[3]), [])
                continue
            }
            guard !line.hasPrefix("#") else { continue }
            var name = String(line.prefix { $0 != "{" && $0 != " " })
            for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) && out[String(name.dropLast(suffix.count))]?.type == "histogram" {
                name = String(name.dropLast(suffix.count))
            }
            guard let open = line.firstIndex(of: "{"), let close = line.firstIndex(of: "}") else { continue }
            for pair in line[line.index(after: open)..<close].split(separator: ",") {
                let label = String(pair.prefix { $0 != "=" })
                if label != "le" { out[name]?.labels.insert(label) }
            }
        }
        return out
    }

    @Test func everyFamilyOfTheReferenceThatSmgHasIsNamedTypedAndLabelledAlike() async throws {
        let good = try await InProcessWorker(name: "good")
        let flaky = try await InProcessWorker(name: "flaky", ["--failure-rate", "1"])
        let smg = try await InProcessRouter(["--worker-urls", good.url, flaky.url, "--policy", "cache_aware", "--history-backend", "memory",
                                             "--max-concurrent-requests", "4", "--retry-max-retries", "1", "--retry-initial-backoff-ms", "1",
                                             "--cb-failure-threshold", "3", "--cb-timeout-duration-secs", "60"])
        try await waitForModels(smg, count: 2)
        // Requests that reach the failing worker are retried on the good one; its breaker opens.
        for i in 0..<8 {
            #expect(try smg.chat("a prompt long enough to be cached \(i)", model: "sim-model").status == 200)
            #expect(try smg.chat("streamed \(i)", model: "sim-model", stream: true).status == 200)
        }
        #expect(try smg.request("POST", "/generate", body: #"{"text":"t"}"#).status == 200)
        #expect(try smg.request("POST", "/v1/responses", body: #"{"model":"sim-model","input":"hello","store":true}"#).status == 200)
        #expect(try smg.request("POST", "/v1/chat/completions", body: "{bad").status == 400)
        #expect(try smg.metric(#"smg_worker_cb_state{worker="\#(flaky.url)"}"#) == 1, "the failing worker's breaker is open")
        // Both workers failing: the retries run out (two failures of the good one, below its
        // breaker's threshold).
        try good.setFaults("failure_rate=1")
        #expect(try smg.chat("x", model: "sim-model").status >= 500)
        // The load monitor's first poll of each worker (at start-up) has gone out.
        try await eventually(timeout: .seconds(10), "both workers' loads polled") {
            try smg.metrics().components(separatedBy: "\nsmg_engine_load_polls_total{").count == 3
        }
        let text = try smg.metrics()

        let exposed = Self.families(in: text)
        var checked = 0
        let reference = try Self.referenceFamilies()
        for family in reference {
            let ours = exposed[family.name]
            if family.same {
                #expect(ours != nil, "\(family) is missing from smg's /metrics")
                guard let ours else { continue }
                #expect(ours.type == family.type, "\(family.name): smg says \(ours.type)")
                #expect(ours.labels == family.labels, "\(family.name): smg's labels are \(ours.labels.sorted())")
                checked += 1
            } else {
                #expect(ours == nil, "\(family.name) is listed as absent from smg, but smg exposes it: update the list")
            }
        }
        #expect(checked == reference.filter(\.same).count)

        let documented = try Self.documentedFamilies()
        #expect(Set(exposed.keys).subtracting(documented).sorted() == [], "families exposed but not in docs/metrics.md")

        // promtool's lint (Debian's prometheus package, which the test set-up installs).
        if let lint = try Self.promtool(["check", "metrics"], input: text) {
            #expect(lint.status == 0 && lint.output.isEmpty, "promtool check metrics: \(lint.output)")
        }
    }

    /// Every metric the dashboard and the alerts name is a family docs/metrics.md documents (so
    /// a renamed metric cannot leave a panel empty), and promtool accepts the configuration.
    @Test func theMonitoringFilesNameOnlyDocumentedMetricsAndPassPromtool() throws {
        let monitoring = Self.root.appendingPathComponent("cluster/monitoring")
        let dashboard = try String(contentsOf: monitoring.appendingPathComponent("grafana-dashboard.json"), encoding: .utf8)
        let alerts = try String(contentsOf: monitoring.appendingPathComponent("alerts.yml"), encoding: .utf8)
        #expect((try? JSONSerialization.jsonObject(with: Data(dashboard.utf8))) != nil, "the dashboard is JSON")
        let documented = try Self.documentedFamilies()
        var named = Set<String>()
        for text in [dashboard, alerts] {
            for match in text.matches(of: /smg_[a-z0-9_]+/) {
                var name = String(match.output)
                for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) && !documented.contains(name) { name = String(name.dropLast(suffix.count)) }
                named.insert(name)
            }
        }
        #expect(named.count >= 20)
        #expect(named.subtracting(documented).sorted() == [], "metrics the monitoring files name but smg does not have")
        let config = monitoring.appendingPathComponent("prometheus.yml").path
        if let check = try Self.promtool(["check", "config", config], input: nil) { #expect(check.status == 0, "\(check.output)") }
        if let check = try Self.promtool(["check", "rules", monitoring.appendingPathComponent("alerts.yml").path], input: nil) { #expect(check.status == 0, "\(check.output)") }
    }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The families docs/metrics.md's tables name (first column).
    static func documentedFamilies() throws -> Set<String> {
        let doc = try String(contentsOf: root.appendingPathComponent("docs/metrics.md"), encoding: .utf8)
        var names = Set<String>()
        for line in doc.split(separator: "\n") where line.hasPrefix("| `smg_") {
            let first = line.dropFirst(2).prefix { $0 != "|" }
            for match in first.matches(of: /`(smg_[a-z0-9_]+)`/) { names.insert(String(match.output.1)) }
        }
        return names
    }

    /// Runs promtool; nil when it is not installed (outside CI: `./dev test` installs it).
    static func promtool(_ arguments: [String], input: String?) throws -> (status: Int32, output: String)? {
        guard let path = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            #expect(ProcessInfo.processInfo.environment["CI"] == nil, "promtool is not installed (./dev test installs the prometheus package)")
            return nil
        }
        let run = Process()
        run.executableURL = URL(fileURLWithPath: path)
        run.arguments = arguments
        let stdin = Pipe(), output = Pipe()
        run.standardInput = stdin
        run.standardOutput = output
        run.standardError = output
        try run.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        run.waitUntilExit()
        return (run.terminationStatus, said)
    }
}
