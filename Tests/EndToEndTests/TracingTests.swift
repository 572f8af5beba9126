import Foundation
import InMemoryTracing
import Node
import TestSupport
import Testing
import Tracing

/// `--enable-trace`: one request is one trace from the client through the router to the worker.
/// The binary's real exporter is checked against an OTLP/gRPC collector built on the official
/// protobuf messages (`Tests/Tracing/otlp-collector.py`, grpcio); the shape of PD and Responses
/// traces is checked in process, with swift-distributed-tracing's in-memory tracer.
@Suite(.serialized) struct TracingTests {
    /// A Python with grpcio and opentelemetry-proto (`./dev test` makes one in .build/test-python).
    static let python = ProcessInfo.processInfo.environment["SMG_TEST_PYTHON"].flatMap { FileManager.default.isExecutableFile(atPath: $0) ? $0 : nil }
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    struct ExportedSpan {
        let traceID, spanID, parentID, name: String
        let kind, status: Int
        let attributes: [String: Any]
        let resource: [String: Any]
    }

    static func spans(in file: URL) -> [ExportedSpan] {
        let text = (try? String(contentsOf: file, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
            return ExportedSpan(traceID: o["trace_id"] as? String ?? "", spanID: o["span_id"] as? String ?? "", parentID: o["parent_span_id"] as? String ?? "",
                                name: o["name"] as? String ?? "", kind: o["kind"] as? Int ?? 0, status: o["status"] as? Int ?? 0,
                                attributes: o["attributes"] as? [String: Any] ?? [:], resource: o["resource"] as? [String: Any] ?? [:])
        }
    }

    @Test(.enabled(if: python != nil || ProcessInfo.processInfo.environment["CI"] != nil, "no SMG_TEST_PYTHON with grpcio (./dev test makes one)"))
    func aRetriedRequestIsOneTraceFromTheClientThroughTheRouterToTheWorker() async throws {
        #expect(Self.python != nil, "SMG_TEST_PYTHON is not set to a Python with grpcio and opentelemetry-proto (./dev test makes one)")
        guard let python = Self.python else { return }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("smg-spans-\(UUID().uuidString).jsonl")
        defer { try? FileManager.default.removeItem(at: file) }
        let collector = try TestProcess(URL(fileURLWithPath: python), [Self.root.appendingPathComponent("Tests/Tracing/otlp-collector.py").path, file.path],
                                        name: "otlp collector")
        let port = Int(try await collector.waitForLine(containing: "listening on").split(separator: " ").last!)!
        let flaky = try await SimWorkerProcess(name: "flaky", ["--failure-rate", "1"])
        let recorder = try await RecordingWorker()
        let smg = try await RouterProcess(["--worker-urls", flaky.url, recorder.url, "--policy", "round_robin", "--enable-trace",
                                           "--otlp-traces-endpoint", "127.0.0.1:\(port)", "--retry-initial-backoff-ms", "1"],
                                          environment: ["OTEL_BSP_SCHEDULE_DELAY": "100"])
        // The client's own trace: the router's spans continue it.
        let traceID = "4bf92f3577b34da6a3ce929d0e0e4736", clientSpan = "00f067aa0ba902b7"
        for _ in 0..<4 {
            #expect(try smg.chat("trace me", headers: [("traceparent", "00-\(traceID)-\(clientSpan)-01")]).status == 200)
        }
        let sent = recorder.received.filter { $0.uri == "/v1/chat/completions" }
        #expect(sent.count == 4)
        let parents = sent.compactMap { head -> String? in
            guard let tp = head.headers.first(name: "traceparent"), tp.hasPrefix("00-\(traceID)-"), tp.hasSuffix("-01") else { return nil }
            return String(tp.split(separator: "-")[2])
        }
        #expect(parents.count == 4 && !parents.contains(clientSpan), "the worker gets the trace with the router's call as parent: \(sent.map { $0.headers.first(name: "traceparent") ?? "none" })")

        try await eventually(timeout: .seconds(10), "the collector has the four requests' spans") {
            Self.spans(in: file).filter { $0.name == "POST /v1/chat/completions" }.count == 4
        }
        try await Task.sleep(for: .milliseconds(300))  // the calls' spans of the last batch
        let spans = Self.spans(in: file)
        let servers = spans.filter { $0.name == "POST /v1/chat/completions" }
        #expect(servers.allSatisfy { $0.traceID == traceID && $0.parentID == clientSpan && $0.kind == 2 }, "server spans continue the client's trace")
        #expect(servers.allSatisfy { $0.resource["service.name"] as? String == "smg" && $0.attributes["http.response.status_code"] as? Int == 200 })
        // One of the requests went to the failing worker first and was retried on the other.
        let retried = servers.first { server in spans.filter { $0.parentID == server.spanID && $0.kind == 3 }.count == 2 }
        #expect(retried != nil, "a retried request has two calls: \(spans.map { "\($0.name) \($0.parentID)" })")
        guard let retried else { return }
        let calls = spans.filter { $0.parentID == retried.spanID && $0.kind == 3 }
        let failed = calls.first { $0.attributes["http.response.status_code"] as? Int == 500 }
        let answered = calls.first { $0.attributes["http.response.status_code"] as? Int == 200 }
        #expect(failed?.status == 2 && failed?.attributes["url.full"] as? String == flaky.url + "/v1/chat/completions")
        #expect(answered?.attributes["http.request.resend_count"] as? Int == 1 && answered?.attributes["url.full"] as? String == recorder.url + "/v1/chat/completions")
        #expect(parents.contains(answered?.spanID ?? "-"), "the worker's traceparent names the router's call")
        #expect(spans.filter { $0.parentID == retried.spanID && $0.name == "select worker" }.count == 2)

        // A traceparent that is not W3C's (malformed, all-zero trace id, oversized) starts a new
        // trace instead of being continued or refused.
        for bad in ["garbage", "00-" + String(repeating: "0", count: 32) + "-00f067aa0ba902b7-01", String(repeating: "a", count: 4000)] {
            #expect(try smg.chat("x", headers: [("traceparent", bad)]).status == 200)
        }
        try await eventually(timeout: .seconds(10), "the collector has the three new traces") {
            Self.spans(in: file).filter { $0.name == "POST /v1/chat/completions" && $0.traceID != traceID }.count == 3
        }
        let fresh = Self.spans(in: file).filter { $0.name == "POST /v1/chat/completions" && $0.traceID != traceID }
        #expect(fresh.allSatisfy { $0.parentID.isEmpty && $0.traceID.count == 32 && $0.traceID != String(repeating: "0", count: 32) })

        // A client that does not record its trace: the router records nothing either, and the
        // worker gets the client's traceparent as it was sent.
        let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
        #expect(try smg.chat("x", headers: [("traceparent", unsampled)]).status == 200)
        #expect(recorder.received.last { $0.uri == "/v1/chat/completions" }?.headers.first(name: "traceparent") == unsampled)
        try await Task.sleep(for: .milliseconds(500))
        #expect(!Self.spans(in: file).contains { $0.traceID == "0af7651916cd43dd8448eb211c80319c" })
    }

    /// An in-process router whose spans are kept in memory.
    static func tracedRouter(_ arguments: [String]) async throws -> (InProcessRouter, InMemoryTracer) {
        let tracer = InMemoryTracer()
        let router = try await InProcessRouter(arguments, tracing: TracingBackend { _ in (tracer, nil) })
        return (router, tracer)
    }

    @Test func aPDRequestHasACallPerHalfWithTheirBootstrapRoom() async throws {
        let prefill = try await InProcessWorker(name: "p", ["--role", "prefill", "--bootstrap-port", "0"])
        let decode = try await InProcessWorker(name: "d", ["--role", "decode"])
        let (smg, tracer) = try await Self.tracedRouter(["--pd-disaggregation", "--disable-health-check", "--prefill", prefill.url, String(prefill.bootstrapPort!), "--decode", decode.url])
        let answer = try smg.request("POST", "/generate", body: #"{"text":"hello"}"#)
        #expect(answer.status == 200, "\(answer.text)")
        try await eventually(timeout: .seconds(5), "the request's spans ended") { tracer.finishedSpans.contains { $0.operationName == "POST /generate" } }
        let spans = tracer.finishedSpans
        let server = try #require(spans.first { $0.operationName == "POST /generate" })
        let calls = spans.filter { $0.parentSpanID == server.spanID && $0.kind == .client }
        #expect(Set(calls.compactMap { Self.text($0.attributes["smg.worker.role"]) }) == ["prefill", "decode"])
        let rooms = Set(calls.compactMap { Self.text($0.attributes["smg.pd.bootstrap_room"]) })
        #expect(rooms.count == 1, "both halves name the same room: \(rooms)")
        #expect(spans.filter { $0.parentSpanID == server.spanID && $0.operationName == "select worker" }.count == 2)
        #expect(spans.allSatisfy { $0.traceID == server.traceID })
    }

    @Test func aResponsesTurnWithHistoryHasItsLoadAndSave() async throws {
        let w = try await InProcessWorker(name: "w")
        let (smg, tracer) = try await Self.tracedRouter(["--worker-urls", w.url])
        let first = try smg.request("POST", "/v1/responses", body: #"{"input":"Hello","store":true}"#)
        #expect(first.status == 200)
        let id = try #require(try first.json()["id"] as? String)
        tracer.clearFinishedSpans()
        #expect(try smg.request("POST", "/v1/responses", body: #"{"input":"And then?","previous_response_id":"\#(id)","store":true}"#).status == 200)
        try await eventually(timeout: .seconds(5), "the turn's spans ended") {
            tracer.finishedSpans.contains { $0.operationName == "POST /v1/responses" } && tracer.finishedSpans.contains { $0.operationName == "history save_response" }
        }
        let spans = tracer.finishedSpans
        let server = try #require(spans.first { $0.operationName == "POST /v1/responses" })
        for operation in ["load_history", "save_response"] {
            let span = spans.first { $0.operationName == "history \(operation)" }
            #expect(span?.parentSpanID == server.spanID, "\(operation)")
            #expect(Self.text(span?.attributes["smg.history.backend"]) == "memory")
            #expect(Self.text(span?.attributes["smg.history.result"]) == "ok")
        }
        #expect(spans.contains { $0.parentSpanID == server.spanID && $0.kind == .client && $0.operationName == "POST" })
    }

    @Test func probesAndTheDashboardAreNotTraced() async throws {
        let w = try await InProcessWorker(name: "w")
        let (smg, tracer) = try await Self.tracedRouter(["--worker-urls", w.url])
        for path in ["/health", "/readiness", "/dashboard", "/dashboard.js"] { #expect(try smg.request("GET", path).status == 200) }
        #expect(try smg.chat("x").status == 200)
        try await eventually(timeout: .seconds(5), "the chat traced") { tracer.finishedSpans.contains { $0.kind == .server } }
        #expect(tracer.finishedSpans.filter { $0.kind == .server }.map(\.operationName) == ["POST /v1/chat/completions"])
    }

    /// A span attribute as text (strings, numbers, booleans).
    static func text(_ value: (any SpanAttributeConvertible)?) -> String? {
        switch value?.toSpanAttribute() {
        case .string(let s)?: s
        case .int64(let i)?: String(i)
        case .int32(let i)?: String(i)
        case .double(let d)?: String(d)
        case .bool(let b)?: String(b)
        default: nil
        }
    }
}
