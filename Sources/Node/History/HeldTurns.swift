import Synchronization

/// Responses this router answered `x-smg-history-write: deferred`: the store did not take them
/// (down, failing over, or no replica confirmed them), and a background job writes them again.
/// Until the job succeeds or gives up they are read from here, so a client that names one at
/// once (`previous_response_id` of its next turn, or `GET /v1/responses/{id}`) through this
/// router finds it instead of a 400 `previous_response_not_found`. Another router does not hold
/// them: through it, the turn is found once it is written.
///
/// Bounded by what holds them: one entry per background job, and `BackgroundWrites` bounds its
/// jobs' bytes. A held response deleted by the client is dropped here, and its job, finding it
/// gone, writes nothing.
final class HeldTurns: Sendable {
    private let held = Mutex<[String: StoredResponse]>([:])

    init() {}

    /// Holds `response` until `release`.
    func hold(_ response: StoredResponse) {
        held.withLock { $0[response.id] = response }
    }

    /// Drops the response; whether it was held.
    @discardableResult
    func release(_ id: String) -> Bool {
        held.withLock { $0.removeValue(forKey: id) != nil }
    }

    func response(_ id: String) -> StoredResponse? {
        held.withLock { $0[id] }
    }
}

extension HistoryStore {
    /// A response as this router knows it: held (answered, not yet stored), else stored.
    func response(_ id: String, held: HeldTurns?) async throws -> StoredResponse? {
        if let r = held?.response(id) { return r }
        return try await response(id)
    }
}
