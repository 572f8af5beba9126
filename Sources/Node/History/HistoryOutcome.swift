import NIOHTTP1

/// How a history operation ended, as the `result` label of `smg_history_operations_total`.
struct HistoryOutcome {
    let label: String

    init(_ result: Result<ControlResponse, APIError>) {
        switch result {
        case .success: self.label = "ok"
        case .failure(let e): self.label = HistoryOutcome(e).label
        }
    }

    init(_ e: APIError) {
        switch e.status {
        case .notFound: self.label = "not_found"
        case .serviceUnavailable: self.label = "unavailable"
        case let s where s.code < 500: self.label = "invalid"
        default: self.label = "error"
        }
    }
}
