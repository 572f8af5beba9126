import NIOHTTP1
import Synchronization

/// Request ids: the first present header of `--request-id-headers`, else a generated one
/// (a random per-process prefix and a counter: unique, and no syscall per request).
final class RequestIDSource: Sendable {
    private let headers: [String]
    private let prefix: String
    private let counter = Atomic<UInt64>(0)

    init(headers: [String]) {
        self.headers = headers
        var g = SystemRandomNumberGenerator()
        let hex = String(g.next() & 0xFFFF_FFFF, radix: 16)
        self.prefix = "smg-" + String(repeating: "0", count: 8 - hex.count) + hex + "-"
    }

    func id(for request: HTTPHeaders) -> String {
        for name in headers {
            if let v = request.first(name: name), !v.isEmpty, v.utf8.count <= 256 { return v }
        }
        let n = counter.add(1, ordering: .relaxed).newValue
        return prefix + String(n, radix: 16)
    }
}

/// CORS per `--cors-allowed-origins` (`*` allows any origin).
struct CORSPolicy: Sendable {
    let origins: Set<String>
    let any: Bool

    init(origins: [String]) {
        self.origins = Set(origins)
        self.any = origins.contains("*")
    }

    var enabled: Bool { any || !origins.isEmpty }

    /// The Access-Control-Allow-Origin value for a request from `origin`, if it is allowed.
    func allowedOrigin(_ origin: String?) -> String? {
        guard let origin, enabled else { return nil }
        return any || origins.contains(origin) ? origin : nil
    }

    func decorate(_ headers: inout HTTPHeaders, origin: String?) {
        guard let allowed = allowedOrigin(origin) else { return }
        headers.add(name: "access-control-allow-origin", value: allowed)
        headers.add(name: "vary", value: "Origin")
        headers.add(name: "access-control-expose-headers", value: "x-request-id, x-smg-error-code")
    }

    func preflightHeaders(_ request: HTTPHeaders) -> HTTPHeaders {
        var h = HTTPHeaders()
        guard let allowed = allowedOrigin(request.first(name: "origin")) else { return h }
        h.add(name: "access-control-allow-origin", value: allowed)
        h.add(name: "vary", value: "Origin")
        h.add(name: "access-control-allow-methods", value: "GET, POST, PUT, PATCH, DELETE, OPTIONS")
        h.add(name: "access-control-allow-headers", value: request.first(name: "access-control-request-headers") ?? "authorization, content-type")
        h.add(name: "access-control-max-age", value: "86400")
        return h
    }
}
