import Foundation
import NIOHTTP1

/// The stored side of the Responses API: `GET`/`DELETE /v1/responses/{id}` and
/// `GET /v1/responses/{id}/input_items`. (`POST /v1/responses` runs through the request
/// pipeline: `ResponsesGateway`.)
enum ResponsesRoutes {
    enum Path: Equatable, Sendable {
        case create
        case response(String)
        case inputItems(String)
    }

    /// `/v1/responses[/{id}[/input_items]]` → the path, nil for anything else under it.
    static func resolve(_ path: Substring) -> Path? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst(3)  // "", "v1", "responses"
        switch parts.count {
        case 0: return .create
        case 1 where !parts[parts.startIndex].isEmpty: return .response(String(parts[parts.startIndex]))
        case 2 where parts.last == "input_items" && !parts[parts.startIndex].isEmpty: return .inputItems(String(parts[parts.startIndex]))
        default: return nil
        }
    }

    /// `tenant`: the caller's (`Tenancy`): another tenant's response is not found.
    /// `held`: responses this router answered `deferred` and has not stored yet (read first; a
    /// deleted one is dropped, so its pending write is not made).
    static func answer(_ path: Path, method: HTTPMethod, target: RequestTarget, store: any HistoryStore, held: HeldTurns? = nil, tenant: String? = nil,
                       metrics: RouterMetrics? = nil) async -> Result<ControlResponse, APIError> {
        let started = ContinuousClock.now
        let result: Result<ControlResponse, APIError>
        do {
            result = .success(try await route(path, method: method, target: target, store: store, held: held, tenant: tenant))
        } catch {
            result = .failure(.history(error))
        }
        let op: String
        switch (path, method) {
        case (.inputItems, _): op = "list_input_items"
        case (_, .DELETE): op = "delete_response"
        default: op = "get_response"
        }
        metrics?.historyOperation(op, result: HistoryOutcome(result).label, seconds: (ContinuousClock.now - started).seconds)
        return result
    }

    private static func route(_ path: Path, method: HTTPMethod, target: RequestTarget, store: any HistoryStore, held: HeldTurns?,
                              tenant: String?) async throws -> ControlResponse {
        switch (path, method) {
        case (.response(let id), .GET):
            return ControlResponse(json: try await existing(id, store, held: held, tenant: tenant).raw)
        case (.response(let id), .DELETE):
            _ = try await existing(id, store, held: held, tenant: tenant)
            // Held (not stored yet): dropped, and its pending write with it; a copy a failed
            // attempt may have left in the store goes too, when the store answers.
            if held?.release(id) == true {
                _ = try? await store.deleteResponse(id)
            } else {
                guard try await store.deleteResponse(try HistoryIDs.checked(id)) else { throw notFound(id) }
            }
            return ControlResponse(json: ["id": .string(id), "object": "response", "deleted": true])
        case (.inputItems(let id), .GET):
            let query = try ListQuery(target)
            var items = try await existing(id, store, held: held, tenant: tenant).input
            if !query.ascending { items.reverse() }
            if let after = query.after, let i = items.firstIndex(where: { $0.id == after }) { items = Array(items[(i + 1)...]) }
            return ControlResponse(json: ConversationRoutes.list(Array(items.prefix(query.limit)), hasMore: items.count > query.limit))
        default:
            throw APIError.methodNotAllowed(method, String(target.path))
        }
    }

    private static func existing(_ id: String, _ store: any HistoryStore, held: HeldTurns?, tenant: String?) async throws -> StoredResponse {
        guard let r = try await store.response(try HistoryIDs.checked(id), held: held), r.isVisible(to: tenant) else { throw notFound(id) }
        return r
    }

    static func notFound(_ id: String) -> APIError {
        APIError(.responseNotFound, "no stored response \(id.prefix(128))")
    }
}

extension APIError {
    /// What a failed history operation answers: its own API error, 503 while storage is
    /// unavailable, 500 for anything else.
    static func history(_ error: any Error) -> APIError {
        switch error {
        case let e as APIError: return e
        case let e as HistoryUnavailable: return .historyUnavailable(e)
        default: return APIError(.historyError, "\(error)")
        }
    }

    static func historyUnavailable(_ error: HistoryUnavailable) -> APIError {
        APIError(.historyUnavailable, "conversation storage is unavailable: \(error.description)")
    }
}

extension Duration {
    /// The duration in seconds, for metrics.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
