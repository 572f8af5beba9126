import NIOHTTP1
import Primitives

/// An error the router answers itself, in the OpenAI-style shape the gateway uses:
/// `{"error":{"type":…,"code":…,"message":…,"param":null}}` plus an `X-SMG-Error-Code` header.
/// Every code the router can answer is one case of `Code`, which fixes its status; the `type`
/// follows from the status alone, so one failure has one status and one type in every mode (PD
/// or not, Responses or chat).
public struct APIError: Error, Sendable {
    /// Every error code the router answers with, grouped by the status it always has.
    public enum Code: String, Sendable, CaseIterable, CustomStringConvertible {
        // 400
        case batchTooLarge = "batch_too_large"
        case conflictingHistory = "conflicting_history"
        case duplicateField = "duplicate_field"
        case invalidBootstrapPort = "invalid_bootstrap_port"
        case invalidConversation = "invalid_conversation"
        case invalidID = "invalid_id"
        case invalidInput = "invalid_input"
        case invalidItem = "invalid_item"
        case invalidModel = "invalid_model"
        case invalidInstructions = "invalid_instructions"
        case invalidParallelToolCalls = "invalid_parallel_tool_calls"
        case invalidTemperature = "invalid_temperature"
        case invalidTopP = "invalid_top_p"
        case invalidUser = "invalid_user"
        case invalidStore = "invalid_store"
        case invalidStream = "invalid_stream"
        case invalidItems = "invalid_items"
        case invalidJSON = "invalid_json"
        case invalidLabels = "invalid_labels"
        case invalidLimit = "invalid_limit"
        case invalidMaxOutputTokens = "invalid_max_output_tokens"
        case invalidMetadata = "invalid_metadata"
        case invalidOrder = "invalid_order"
        case invalidPolicy = "invalid_policy"
        case invalidPreviousResponseID = "invalid_previous_response_id"
        case invalidSafetyIdentifier = "invalid_safety_identifier"
        case invalidToolChoice = "invalid_tool_choice"
        case invalidTools = "invalid_tools"
        case invalidURL = "invalid_url"
        case invalidWorker = "invalid_worker"
        case invalidWorkerField = "invalid_worker_field"
        case invalidWorkerType = "invalid_worker_type"
        case itemTooLarge = "item_too_large"
        case missingItems = "missing_items"
        case missingURL = "missing_url"
        case previousResponseNotFound = "previous_response_not_found"
        case routerOwnedField = "router_owned_field"
        case tooManyItems = "too_many_items"
        case unknownField = "unknown_field"
        case unsupportedTool = "unsupported_tool"
        case urlImmutable = "url_immutable"
        // 401
        case invalidAPIKey = "invalid_api_key"
        case invalidCredentials = "invalid_credentials"
        case invalidToken = "invalid_token"
        // 403
        case insufficientRole = "insufficient_role"
        // 404
        case conversationNotFound = "conversation_not_found"
        case itemNotFound = "item_not_found"
        case meshDisabled = "mesh_disabled"
        case modelNotFound = "model_not_found"
        case notFound = "not_found"
        case responseNotFound = "response_not_found"
        case workerNotFound = "worker_not_found"
        // 405
        case methodNotAllowed = "method_not_allowed"
        // 408
        case queueTimeout = "queue_timeout"
        // 409
        case workerExists = "worker_exists"
        // 413
        case payloadTooLarge = "payload_too_large"
        // 429
        case rateLimited = "rate_limited"
        // 500
        case historyError = "history_error"
        // 501
        case notSupportedInPDMode = "not_supported_in_pd_mode"
        // 502
        case decodeFailed = "decode_failed"
        case prefillFailed = "prefill_failed"
        case upstreamError = "upstream_error"
        // 503
        case historyUnavailable = "history_unavailable"
        case jwksUnavailable = "jwks_unavailable"
        case noAvailableWorkers = "no_available_workers"
        case noDecodeWorkers = "no_decode_workers"
        case noPrefillWorkers = "no_prefill_workers"
        case shuttingDown = "shutting_down"
        case tooManyConnections = "too_many_connections"
        case workerOverloadProtectionShed = "worker_overload_protection_shed"
        // 504
        case decodeTimeout = "decode_timeout"
        case prefillTimeout = "prefill_timeout"
        case upstreamTimeout = "upstream_timeout"

        public var status: HTTPResponseStatus {
            switch self {
            case .batchTooLarge, .invalidModel, .invalidInstructions, .invalidParallelToolCalls, .invalidTemperature, .invalidTopP, .invalidUser, .invalidStore, .invalidStream, .conflictingHistory, .duplicateField, .invalidBootstrapPort, .invalidConversation, .invalidID, .invalidInput, .invalidItem, .invalidItems, .invalidJSON, .invalidLabels, .invalidLimit, .invalidMaxOutputTokens, .invalidMetadata, .invalidOrder, .invalidPolicy, .invalidPreviousResponseID, .invalidSafetyIdentifier, .invalidToolChoice, .invalidTools, .invalidURL, .invalidWorker, .invalidWorkerField, .invalidWorkerType, .itemTooLarge, .missingItems, .missingURL, .previousResponseNotFound, .routerOwnedField, .tooManyItems, .unknownField, .unsupportedTool, .urlImmutable:
                return .badRequest
            case .invalidAPIKey, .invalidCredentials, .invalidToken:
                return .unauthorized
            case .insufficientRole:
                return .forbidden
            case .conversationNotFound, .itemNotFound, .meshDisabled, .modelNotFound, .notFound, .responseNotFound, .workerNotFound:
                return .notFound
            case .methodNotAllowed:
                return .methodNotAllowed
            case .queueTimeout:
                return .requestTimeout
            case .workerExists:
                return .conflict
            case .payloadTooLarge:
                return .payloadTooLarge
            case .rateLimited:
                return .tooManyRequests
            case .historyError:
                return .internalServerError
            case .notSupportedInPDMode:
                return .notImplemented
            case .decodeFailed, .prefillFailed, .upstreamError:
                return .badGateway
            case .historyUnavailable, .jwksUnavailable, .noAvailableWorkers, .noDecodeWorkers, .noPrefillWorkers, .shuttingDown, .tooManyConnections, .workerOverloadProtectionShed:
                return .serviceUnavailable
            case .decodeTimeout, .prefillTimeout, .upstreamTimeout:
                return .gatewayTimeout
            }
        }

        public var description: String { rawValue }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var status: HTTPResponseStatus { code.status }
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
        APIError(.invalidJSON, "request body is not valid JSON: \(detail)")
    }
    static func modelNotFound(_ model: String) -> APIError {
        APIError(.modelNotFound, "model '\(model)' is not served by any worker")
    }
    static func routeNotFound(_ method: HTTPMethod, _ path: String) -> APIError {
        APIError(.notFound, "no route for \(method) \(path)")
    }
    static func methodNotAllowed(_ method: HTTPMethod, _ path: String) -> APIError {
        APIError(.methodNotAllowed, "\(method) is not allowed on \(path)")
    }
    static func noWorkers(_ model: String?) -> APIError {
        APIError(.noAvailableWorkers, model.map { "no healthy worker available for model '\($0)'" } ?? "no healthy worker available")
    }
    static func upstreamTimeout(_ secs: Int) -> APIError {
        APIError(.upstreamTimeout, "worker did not answer within --request-timeout-secs (\(secs) s)")
    }
    static func upstreamFailed(_ detail: String) -> APIError {
        APIError(.upstreamError, "worker connection failed: \(detail)")
    }
    static let unauthorized = APIError(.invalidAPIKey, "missing or wrong API key: send Authorization: Bearer <--api-key>")
    static let controlUnauthorized = APIError(.invalidCredentials, "the control plane needs credentials: send Authorization: Bearer <control-plane key, JWT or --api-key>")
    static func invalidToken(_ reason: String) -> APIError {
        APIError(.invalidToken, "JWT rejected: \(reason)")
    }
    /// Why the keys could not be loaded is in the router's log, not here: a caller (who need
    /// not be authenticated yet) learns nothing about the issuer's network.
    static let jwksUnavailable = APIError(.jwksUnavailable, "cannot verify tokens: the issuer's signing keys could not be loaded; the router's log says why")
    static let rateLimited = APIError(.rateLimited, "too many requests: the router's queue is full (--max-concurrent-requests, --queue-size)")
    static func queueTimeout(_ secs: UInt64) -> APIError {
        APIError(.queueTimeout, "request waited in the router's queue longer than --queue-timeout-secs (\(secs) s)")
    }
    static let tooManyConnectionsFromClient = APIError(.tooManyConnections, "this client address has --max-connections-per-client open; close some or retry shortly")
    static let tooManyConnections = APIError(.tooManyConnections, "the router has --max-client-connections open; retry shortly")
    static let shuttingDown = APIError(.shuttingDown, "router is shutting down")
}
