@testable import Node
import Testing

/// The `--discovery-file` manifest is read strictly: what it registers is exact, and anything
/// it does not understand refuses the whole file with a message that names the problem.
@Suite struct DiscoveryManifestTests {
    static func parse(_ text: String) throws(DiscoveryManifest.Invalid) -> DiscoveryManifest {
        try DiscoveryManifest.parse(Array(text.utf8))
    }

    @Test func entriesAndWhatTheyRegister() throws {
        let m = try Self.parse("""
            {"version": 1, "workers": [
              {"url": "http://10.0.0.5:30000/"},
              {"id": "gpu-6", "url": "http://10.0.0.6:30000", "model_id": "llama", "worker_type": "prefill", "bootstrap_port": 8998,
               "kv_connector": "mooncake", "kv_role": "producer", "kv_engine_id": "e6"},
              {"url": "https://10.0.0.7", "worker_type": "decode", "model_id": null}
            ]}
            """)
        #expect(m.workers.count == 3)
        let plain = m.workers[0]
        #expect(plain.id == plain.url.canonical && plain.role == .regular && plain.modelID == nil && plain.kv.isEmpty)
        #expect(plain.worker.labels[DiscoveredWorker.providerLabel] == "file" && plain.worker.labels[DiscoveredWorker.idLabel] == plain.url.canonical)
        let prefill = m.workers[1]
        #expect(prefill.id == "gpu-6" && prefill.role == .prefill && prefill.bootstrapPort == 8998 && prefill.modelID == "llama")
        #expect(prefill.worker.labels["kv_connector"] == "mooncake" && prefill.worker.labels["kv_role"] == "producer" && prefill.worker.labels["kv_engine_id"] == "e6")
        #expect(m.workers[2].role == .decode)
        // The spec changes with anything that makes the registration, and only then.
        var changed = prefill
        changed.modelID = "llama-2"
        #expect(changed.worker.spec != prefill.worker.spec)
        #expect(try Self.parse(#"{"version":1,"workers":[{"url":"http://10.0.0.5:30000"}]}"#).workers[0].worker.spec == plain.worker.spec)
        #expect(try Self.parse(#"{"version":1,"workers":[]}"#).workers.isEmpty)
    }

    @Test func anythingItDoesNotUnderstandRefusesTheFile() {
        let cases: [(String, String)] = [
            ("", "not a JSON object"), ("[]", "not a JSON object"), (#"{"version":1}"#, "missing field 'workers'"),
            (#"{"workers":[]}"#, "missing field 'version'"), (#"{"version":2,"workers":[]}"#, "unsupported version 2"),
            (#"{"version":"1","workers":[]}"#, "unsupported version"), (#"{"version":1,"workers":[],"extra":1}"#, "unknown field 'extra'"),
            (#"{"version":1,"workers":{}}"#, "'workers' is not an array"), (#"{"version":1,"workers":[1]}"#, "workers[0] is not an object"),
            (#"{"version":1,"workers":[{}]}"#, "missing field 'url'"), (#"{"version":1,"workers":[{"url":""}]}"#, "non-empty string"),
            (#"{"version":1,"workers":[{"url":"http://a:1","bogus":true}]}"#, "unknown field 'bogus'"),
            (#"{"version":1,"workers":[{"url":"ftp://a"}]}"#, "workers[0]"),
            (#"{"version":1,"workers":[{"url":"http://a:1","worker_type":"encode"}]}"#, "worker_type"),
            (#"{"version":1,"workers":[{"url":"http://a:1","bootstrap_port":8998}]}"#, "only a prefill"),
            (#"{"version":1,"workers":[{"url":"http://a:1","worker_type":"prefill","bootstrap_port":70000}]}"#, "bootstrap_port"),
            (#"{"version":1,"workers":[{"url":"http://a:1","model_id":"m\r\nx: y"}]}"#, "control character"),
            (#"{"version":1,"workers":[{"url":"http://a:1"},{"url":"http://a:1/"}]}"#, "listed twice"),
            (#"{"version":1,"workers":[{"url":"http://a:1","id":"x"},{"url":"http://a:2","id":"x"}]}"#, "id 'x' is listed twice"),
            (#"{"version":1,"workers":[{"url":"http://a:1","kv_role":5}]}"#, "'kv_role' must be a non-empty string"),
        ]
        for (text, expected) in cases {
            do {
                _ = try Self.parse(text)
                Issue.record("accepted: \(text)")
            } catch {
                #expect(error.description.contains(expected), "\(text): \(error.description)")
            }
        }
    }

    @Test func boundsHold() {
        let many = (0...DiscoveryManifest.maxWorkers).map { #"{"url":"http://10.1.\#($0 / 250).\#($0 % 250):1"}"# }.joined(separator: ",")
        #expect(throws: DiscoveryManifest.Invalid("more than \(DiscoveryManifest.maxWorkers) workers")) {
            try Self.parse(#"{"version":1,"workers":[\#(many)]}"#)
        }
        let huge = [UInt8](repeating: 0x20, count: DiscoveryManifest.maxBytes + 1)
        #expect(throws: DiscoveryManifest.Invalid("larger than \(DiscoveryManifest.maxBytes) bytes")) { try DiscoveryManifest.parse(huge) }
    }
}
