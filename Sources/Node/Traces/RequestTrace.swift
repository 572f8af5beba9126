import NIOHTTP1
import Tracing

/// The spans of one request while `--enable-trace` is on: the server span the request is, and
/// the spans under it (the policy's choice, the wait in the admission queue, each attempt's
/// calls to workers, history loads and saves). Made and used on the connection's event loop.
/// With tracing off there is none: every call site costs one nil check.
///
/// Attribute names are OpenTelemetry's semantic conventions where one exists
/// (`http.request.method`, `http.route`, `http.response.status_code`, `url.full`,
/// `server.address`, `http.request.resend_count`, `error.type`, `gen_ai.request.model`), and
/// `smg.*` for what only a router has (policy, decision, breaker, bootstrap room).
final class RequestTrace: Sendable {
    let tracer: any Tracer
    let server: any Span

    /// Starts the server span of a request: it continues the client's trace when the client
    /// sent a W3C `traceparent` (and keeps its sampling decision), else it starts a new one.
    init(tracer: any Tracer, head: HTTPRequestHead, route: String, requestID: String, router: String?) {
        self.tracer = tracer
        var context = InstrumentationContext.topLevel
        tracer.extract(head.headers, into: &context, using: HTTPHeadersExtractor())
        server = tracer.startSpan("\(head.method.rawValue) \(route)", context: context, ofKind: .server)
        server.updateAttributes { a in
            a["http.request.method"] = head.method.rawValue
            a["http.route"] = route
            a["smg.request_id"] = requestID
            if let router { a["smg.router"] = router }
        }
    }

    /// A span under the request's (or under `parent`).
    func span(_ name: String, kind: SpanKind = .internal, under parent: (any Span)? = nil) -> any Span {
        tracer.startSpan(name, context: (parent ?? server).context, ofKind: kind)
    }

    /// Puts `span`'s context on a request to a worker (`traceparent`, `tracestate`), replacing
    /// whatever the client sent: the worker's spans hang under the router's call.
    func propagate(_ span: any Span, into headers: inout HTTPHeaders) {
        tracer.inject(span.context, into: &headers, using: HTTPHeadersInjector())
    }

    /// The request's model, once its body is read.
    func model(_ model: String?) {
        guard let model else { return }
        server.attributes["gen_ai.request.model"] = String(model.prefix(256))
    }

    /// The answer went out (or the client left: 499). As the conventions have it for a server,
    /// only a 5xx marks the span failed; the error code is recorded either way.
    func end(status: Int, errorCode: String) {
        Self.finish(server, status: status, errorType: errorCode.isEmpty ? nil : errorCode, failed: status >= 500)
    }

    /// Ends a call to a worker: failed on a 4xx or 5xx answer, or when it never answered
    /// (`errorType`: timeout, connection_error).
    static func endCall(_ span: any Span, status: Int?, errorType: String?) {
        finish(span, status: status, errorType: errorType ?? status.flatMap { $0 >= 400 ? String($0) : nil }, failed: errorType != nil || (status ?? 0) >= 400)
    }

    static func finish(_ span: any Span, status: Int?, errorType: String?, failed: Bool) {
        span.updateAttributes { a in
            if let status { a["http.response.status_code"] = status }
            if let errorType { a["error.type"] = errorType }
        }
        if failed { span.setStatus(SpanStatus(code: .error, message: errorType)) }
        span.end()
    }

    /// A history load or save (`load_history`, `save_response`) against `backend`.
    func history(_ operation: String, backend: String) -> any Span {
        let span = span("history \(operation)", kind: .client)
        span.updateAttributes { a in
            a["smg.history.backend"] = backend
            a["smg.history.operation"] = operation
        }
        return span
    }

    /// Ends a history span with its result (`ok`, `not_found`, `unavailable`, `error`, ...).
    static func endHistory(_ span: (any Span)?, result: String) {
        guard let span else { return }
        span.attributes["smg.history.result"] = result
        if result != "ok" && result != "not_found" { span.setStatus(SpanStatus(code: .error, message: result)) }
        span.end()
    }

    /// Whether a request is recorded, decided before any span exists so that a request not
    /// recorded costs nothing: a client's valid W3C `traceparent` decides by its sampled flag
    /// (parent-based sampling), any other request is recorded with probability `ratio`
    /// (`draw` uniform in 0..<1). A request not recorded passes the client's `traceparent` on
    /// untouched, so the client's trace still reaches the worker.
    static func sampled(_ headers: HTTPHeaders, ratio: Double, draw: Double) -> Bool {
        if let flags = parentFlags(headers) { return flags & 1 == 1 }
        return draw < ratio
    }

    /// The flags of a valid version-00 `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, ids not all
    /// zero), nil for none or a malformed one (which starts a new trace).
    static func parentFlags(_ headers: HTTPHeaders) -> UInt8? {
        let values = headers["traceparent"]
        guard values.count == 1, let value = values.first else { return nil }
        let bytes = Array(value.utf8)
        guard bytes.count == 55, bytes[0] == UInt8(ascii: "0"), bytes[1] == UInt8(ascii: "0"),
              bytes[2] == UInt8(ascii: "-"), bytes[35] == UInt8(ascii: "-"), bytes[52] == UInt8(ascii: "-") else { return nil }
        func hex(_ range: Range<Int>) -> Bool { bytes[range].allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) } }
        guard hex(3..<35), hex(36..<52), hex(53..<55),
              bytes[3..<35].contains(where: { $0 != 48 }), bytes[36..<52].contains(where: { $0 != 48 }) else { return nil }
        return UInt8(String(decoding: bytes[53..<55], as: UTF8.self), radix: 16)
    }

    /// Health probes, the dashboard's polls, preflights and paths the router does not have
    /// (scanners) are not traced: they would bury the requests worth following.
    static func traces(_ route: Route) -> Bool {
        switch route {
        case .health, .readiness, .corsPreflight, .dashboard, .dashboardScript, .dashboardStats, .notFound, .methodNotAllowed: false
        default: true
        }
    }
}
