import NIOHTTP1
import Primitives

/// An error the router answers itself, in the OpenAI-style shape the gateway uses:
/// `{"error":{"type":…,"code":…,"message":…,"param":null}}` plus an `X-SMG-Error-Code` header.
/// The `type` follows from the status alone, so one failure has one type in every mode (PD or
/// not, Responses or chat); the `code` says which failure it is.
public struct APIError: Error, Sendable {
    public let status: HTTPResponseStatus
    public let code: String
    public let message: String

    public init(_ status: HTTPResponseStatus, code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public var type: String { Self.type(of: status) }

    /// OpenAI's error types by status.
    static func type(of status: HTTPResponseStatus) -> String {
        switch status.code {
        case 401: return "authentication_error"
        case 403: return "permission_error"
        case 404: return "not_found_error"
        case 408, 504: return "timeout_error"
        case 429: return "rate_limit_error"
        case 502: return "bad_gateway"
        case 503: return "service_unavailable"
        case 400..<500: return "invalid_request_error"
        default: return "internal_error"
        }
    }

    public var body: String {
        #"{"error":{"type":"\#(type)","code":"\#(code)","message":\#(JSONString.quote(message)),"param":null}}"#
    }

    static func invalidJSON(_ detail: String) -> APIError {
        APIError(.badRequest, code: "invalid_json", "request body is not valid JSON: \(detail)")
    }
    static func badRequest(_ code: String, _ message: String) -> APIError {
        APIError(.badRequest, code: code, message)
    }
    static func modelNotFound(_ model: String) -> APIError {
        APIError(.notFound, code: "model_not_found", "model '\(model)' is not served by any worker")
    }
    static func routeNotFound(_ method: HTTPMethod, _ path: String) -> APIError {
        APIError(.notFound, code: "not_found", "no route for \(method) \(path)")
    }
    static func methodNotAllowed(_ method: HTTPMethod, _ path: String) -> APIError {
        APIError(.methodNotAllowed, code: "method_not_allowed", "\(method) is not allowed on \(path)")
    }
    static func noWorkers(_ model: String?) -> APIError {
        APIError(.serviceUnavailable, code: "no_available_workers",
                 model.map { "no healthy worker available for model '\($0)'" } ?? "no healthy worker available")
    }
    static func payloadTooLarge(_ limit: BodyLimit) -> APIError {
        APIError(.payloadTooLarge, code: "payload_too_large", "request body exceeds \(limit.source) (\(limit.bytes) bytes)")
    }
    static func upstreamTimeout(_ secs: Int) -> APIError {
        APIError(.gatewayTimeout, code: "upstream_timeout", "worker did not answer within --request-timeout-secs (\(secs) s)")
    }
    static func upstreamFailed(_ detail: String) -> APIError {
        APIError(.badGateway, code: "upstream_error", "worker connection failed: \(detail)")
    }
    static let unauthorized = APIError(.unauthorized, code: "invalid_api_key", "missing or wrong API key: send Authorization: Bearer <--api-key>")
    static let controlUnauthorized = APIError(.unauthorized, code: "invalid_credentials",
        "the control plane needs credentials: send Authorization: Bearer <control-plane key, JWT or --api-key>")
    static func invalidToken(_ reason: String) -> APIError {
        APIError(.unauthorized, code: "invalid_token", "JWT rejected: \(reason)")
    }
    static func forbidden(_ principal: Principal, needs role: Role, detail: String? = nil) -> APIError {
        APIError(.forbidden, code: "insufficient_role",
                 detail ?? "'\(principal.id)' has role \(principal.role.rawValue); this route needs \(role.rawValue)")
    }
    /// Why the keys could not be loaded is in the router's log, not here: a caller (who need
    /// not be authenticated yet) learns nothing about the issuer's network.
    static let jwksUnavailable = APIError(.serviceUnavailable, code: "jwks_unavailable",
                                          "cannot verify tokens: the issuer's signing keys could not be loaded; the router's log says why")
    static let rateLimited = APIError(.tooManyRequests, code: "rate_limited", "too many requests: the router's queue is full (--max-concurrent-requests, --queue-size)")
    static func queueTimeout(_ secs: UInt64) -> APIError {
        APIError(.requestTimeout, code: "queue_timeout", "request waited in the router's queue longer than --queue-timeout-secs (\(secs) s)")
    }
    static let tooManyConnectionsFromClient = APIError(.serviceUnavailable, code: "too_many_connections",
        "this client address has --max-connections-per-client open; close some or retry shortly")
    static let tooManyConnections = APIError(.serviceUnavailable, code: "too_many_connections",
        "the router has --max-client-connections open; retry shortly")
    static let shuttingDown = APIError(.serviceUnavailable, code: "shutting_down", "router is shutting down")
}
