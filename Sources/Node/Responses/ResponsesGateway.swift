import Foundation
import NIOCore
import NIOHTTP1

/// `POST /v1/responses`, owned by the gateway: the request is checked, its history loaded (the
/// `previous_response_id` chain or the `conversation`'s items), and the turn translated into a
/// chat completion that runs through the normal pipeline (policy, admission, retries, mesh) as
/// any chat does, so a history that expands to a shared prefix routes cache-aware like a chat.
/// `ResponsesClient` translates the worker's answer back and stores it.
enum ResponsesGateway {
    /// One turn: what the answer's translation and storage need.
    struct Turn {
        let request: ResponsesRequest
        let id: String
        let createdAt: Date
        /// Whose history it reads and whose response it stores (`Tenancy`).
        var tenant: String? = nil
    }

    /// History a turn replays: the most recent this many items (OpenAI's chain limit)...
    static let maxHistoryItems = 100
    /// ...holding at most this many bytes, the newest first: a chain of large turns is cut
    /// where its size passes this, as a long one is cut at `maxHistoryItems`.
    static let maxHistoryBytes = 16 << 20

    /// Builds the plan for a turn; `done` runs on `loop`, at once when the turn has no history
    /// to load, after the store answered otherwise.
    static func prepare(head: HTTPRequestHead, body: ByteBuffer, requestID: String, tenant: String? = nil, trace: RequestTrace? = nil, state: RouterState,
                        loop: any EventLoop, done: @escaping (Result<(ExchangePlan, Turn), APIError>) -> Void) {
        let now = Date()
        @Sendable func parse() -> Result<ResponsesRequest, APIError> {
            Result { () throws(APIError) in try ResponsesRequest.parse(body.readableBytesView, now: now) }
        }
        // A large body is parsed off the event loop: the loop's other connections do not wait
        // for one client's megabytes of input.
        guard body.readableBytes > parseOnLoopBytes else {
            return parsed(parse(), now: now, head: head, requestID: requestID, tenant: tenant, trace: trace, state: state, loop: loop, done: done)
        }
        OffLoop.run(on: loop, { parse() }) { result in
            parsed(result, now: now, head: head, requestID: requestID, tenant: tenant, trace: trace, state: state, loop: loop, done: done)
        }
    }

    /// Bodies up to this size are parsed on the event loop (well under a millisecond).
    static let parseOnLoopBytes = 256 << 10

    private static func parsed(_ parsed: Result<ResponsesRequest, APIError>, now: Date, head: HTTPRequestHead, requestID: String, tenant: String?,
                               trace: RequestTrace?, state: RouterState,
                               loop: any EventLoop, done: @escaping (Result<(ExchangePlan, Turn), APIError>) -> Void) {
        let request: ResponsesRequest
        switch parsed {
        case .success(let r): request = r
        case .failure(let error): return done(.failure(error))
        }
        if request.store {
            do throws(APIError) {
                try ConversationItem.checkSizes(request.input, field: "input", maxBytes: state.config.historyMaxItemBytes)
            } catch {
                return done(.failure(error))
            }
        }
        let turn = Turn(request: request, id: HistoryIDs.make("resp"), createdAt: now, tenant: tenant)
        func build(_ history: [ConversationItem]) -> Result<(ExchangePlan, Turn), APIError> {
            Result { () throws(APIError) in (try plan(turn, history: history, head: head, requestID: requestID, state: state), turn) }
        }
        guard request.previousResponseID != nil || request.conversationID != nil else { return done(build([])) }
        let (store, held, metrics, logger) = (state.history, state.heldTurns, state.metrics, state.log(.history))
        let span = trace?.history("load_history", backend: state.config.history.name)
        OffLoop.run(on: loop, {
            let started = ContinuousClock.now
            let loaded: Result<[ConversationItem], APIError>
            do {
                loaded = .success(try await history(for: request, tenant: tenant, store: store, held: held))
            } catch {
                loaded = .failure(.history(error))
            }
            let outcome = if case .failure(let e) = loaded { HistoryOutcome(e).label } else { "ok" }
            metrics.historyOperation("load_history", result: outcome, seconds: (ContinuousClock.now - started).seconds)
            RequestTrace.endHistory(span, result: outcome)
            logger.debug("history loaded", metadata: ["request_id": "\(requestID)", "result": "\(outcome)",
                                                      "items": "\((try? loaded.get())?.count ?? 0)", "ms": "\((ContinuousClock.now - started).seconds * 1000)"])
            return loaded
        }) { loaded in
            done(loaded.flatMap(build))
        }
    }

    /// The items the turn continues from, oldest first, at most `maxHistoryItems`.
    /// Another tenant's response or conversation is not found; a chain ends at a link the
    /// caller may not see.
    static func history(for request: ResponsesRequest, tenant: String? = nil, store: any HistoryStore,
                        held: HeldTurns? = nil) async throws -> [ConversationItem] {
        if let previous = request.previousResponseID {
            guard let chain = try await store.responseChain(previous, maxDepth: maxHistoryItems, maxBytes: maxHistoryBytes, visibleTo: tenant,
                                                            held: held) else {
                throw APIError(.previousResponseNotFound, "previous response '\(previous.prefix(128))' was not found (never stored, deleted or expired)")
            }
            return newest(chain.flatMap { $0.input + $0.output })
        }
        if let conversation = request.conversationID {
            guard try await store.conversation(conversation)?.isVisible(to: tenant) == true,
                  let page = try await store.items(of: conversation, limit: maxHistoryItems, ascending: false, after: nil) else {
                throw APIError(.conversationNotFound, "no conversation \(conversation.prefix(128))")
            }
            return newest(page.items.reversed())
        }
        return []
    }

    /// The most recent items, oldest first, within `maxHistoryItems` and `maxHistoryBytes`.
    static func newest(_ items: [ConversationItem]) -> [ConversationItem] {
        var bytes = 0
        var kept = 0
        for item in items.reversed().prefix(maxHistoryItems) {
            bytes += MemoryHistoryStore.bytes(of: item)
            guard bytes <= maxHistoryBytes else { break }
            kept += 1
        }
        return Array(items.suffix(kept))
    }

    /// The chat completion plan for a turn: the translated body to `/v1/chat/completions`,
    /// read for routing like any chat request, counted as the `responses` endpoint.
    static func plan(_ turn: Turn, history: [ConversationItem], head: HTTPRequestHead, requestID: String, state: RouterState) throws(APIError) -> ExchangePlan {
        let messages = ResponsesTranslation.messages(instructions: turn.request.instructions, items: history + turn.request.input)
        let body = ByteBuffer(string: ResponsesTranslation.chatBody(turn.request, messages: messages).render())
        var chatHead = head
        chatHead.uri = "/v1/chat/completions"
        // The gateway reads the worker's answer: it must come uncompressed.
        chatHead.headers.remove(name: "accept-encoding")
        var plan = try InferenceRequest.plan(.chat, head: chatHead, body: body, requestID: requestID, tenant: turn.tenant, state: state)
        plan.endpoint = "responses"
        return plan
    }
}
