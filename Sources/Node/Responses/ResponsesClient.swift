import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// The client side of a Responses turn's exchange: it stands between the exchange and the
/// client connection, translates the worker's chat completion (whole or streamed) into the
/// Responses API's shapes, stores the result when asked, and only then ends the client's
/// response, so a client that reads `GET /v1/responses/{id}` after its answer always finds it.
///
/// A worker's error (any status but 200) is relayed as it came: it is already JSON in the
/// shape clients know. A stored write that fails does not cost the client its answer: the
/// response still goes out, marked `x-smg-history-write: failed` (or, for a stream whose head
/// is long gone, logged), and counted as `save_response`/`unavailable`.
final class ResponsesClient: ExchangeClient {
    private let inner: any ExchangeClient
    private let turn: ResponsesGateway.Turn
    private let state: RouterState
    private let loop: any EventLoop

    private enum Mode {
        /// Nothing from the worker yet.
        case waiting
        /// A complete JSON answer is being collected.
        case collecting(status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer)
        /// A stream is being translated event by event.
        case streaming(ResponsesStream)
        /// A worker error is being relayed as it is.
        case relaying
        case done
    }
    private var mode = Mode.waiting
    /// Drops the exchange's worker answer (closes its connection, settles its books): set by the
    /// connection that runs the exchange, called when this client gives up on an answer that is
    /// out of bounds, so an endless answer costs nothing more once refused.
    var abandonExchange: (() -> Void)?

    /// A worker's complete answer above this is not a chat completion the gateway will parse.
    static let maxCompletionBytes = 32 << 20

    /// The request's spans, for the history save (`--enable-trace`).
    private let trace: RequestTrace?

    init(inner: any ExchangeClient, turn: ResponsesGateway.Turn, state: RouterState, loop: any EventLoop, trace: RequestTrace? = nil) {
        self.inner = inner
        self.trace = trace
        self.turn = turn
        self.state = state
        self.loop = loop
    }

    func sendHead(status: HTTPResponseStatus, headers: HTTPHeaders) {
        guard case .waiting = mode else { return }
        guard status == .ok else {
            mode = .relaying
            return inner.sendHead(status: status, headers: headers)
        }
        var h = headers
        h.remove(name: "content-length")
        h.remove(name: "content-type")
        guard turn.request.stream else {
            mode = .collecting(status: status, headers: h, body: ByteBuffer())
            return
        }
        h.add(name: "content-type", value: "text/event-stream")
        h.add(name: "cache-control", value: "no-cache")
        var stream = ResponsesStream(responseID: turn.id, createdAt: turn.createdAt, request: turn.request)
        inner.sendHead(status: .ok, headers: h)
        inner.sendBody(ByteBuffer(string: stream.start()))
        mode = .streaming(stream)
    }

    /// The labels of this request's router errors.
    private var routeLabels: RouterMetrics.RouteLabels { .of(model: turn.request.model, endpoint: "responses", registry: state.registry) }

    func sendBody(_ buffer: ByteBuffer) {
        switch mode {
        case .relaying:
            inner.sendBody(buffer)
        case .collecting(let status, let headers, var body):
            guard body.readableBytes + buffer.readableBytes <= Self.maxCompletionBytes else {
                mode = .done
                giveUp()
                state.metrics.routerError(routeLabels, errorType: "upstream_error")
                return inner.respond(error: .upstreamFailed("the worker's answer exceeds \(Self.maxCompletionBytes) bytes"), extra: HTTPHeaders())
            }
            mode = .waiting  // drop the reference so the buffer is written in place
            var more = buffer
            body.writeBuffer(&more)
            mode = .collecting(status: status, headers: headers, body: body)
        case .streaming(var stream):
            mode = .waiting
            let events = stream.feed(buffer.readableBytesView)
            mode = .streaming(stream)
            if !events.isEmpty { inner.sendBody(ByteBuffer(string: events)) }
            if let failure = stream.failure {
                // Out of bounds: the client is told and its response ends; the worker's is dropped.
                mode = .done
                giveUp()
                state.metrics.routerError(routeLabels, errorType: "upstream_error")
                inner.sendBody(ByteBuffer(string: stream.failed(failure)))
                inner.flush()
                inner.endResponse()
            }
        case .waiting, .done:
            break
        }
    }

    func flush() {
        if case .collecting = mode { return }
        inner.flush()
    }

    func endResponse() {
        switch mode {
        case .relaying, .waiting:
            mode = .done
            inner.endResponse()
        case .collecting(_, let headers, let body):
            mode = .done
            guard let json = JSONValue.parse(body.readableBytesView), let result = ResponsesTranslation.result(ofCompletion: json) else {
                state.metrics.routerError(routeLabels, errorType: "invalid_upstream_response")
                return inner.respond(error: .upstreamFailed("the worker's answer is not a chat completion"), extra: HTTPHeaders())
            }
            let response = ResponsesTranslation.response(id: turn.id, createdAt: turn.createdAt, request: turn.request, result: result)
            store(response, result: result) { [inner] write in
                var h = headers
                if write != "stored" { h.add(name: "x-smg-history-write", value: write) }
                let text = response.render()
                h.add(name: "content-type", value: "application/json")
                h.add(name: "content-length", value: String(text.utf8.count))
                inner.sendHead(status: .ok, headers: h)
                inner.sendBody(ByteBuffer(string: text))
                inner.endResponse()
            }
        case .streaming(var stream):
            mode = .done
            let last = stream.finish()
            if !last.isEmpty { inner.sendBody(ByteBuffer(string: last)) }
            guard stream.sawDone else {
                // The worker's stream ended without its last event: say so, store nothing.
                inner.sendBody(ByteBuffer(string: stream.failed("the worker's stream ended early")))
                return inner.endResponse()
            }
            var events = stream.finishItems()
            let response = ResponsesTranslation.response(id: turn.id, createdAt: turn.createdAt, request: turn.request, result: stream.result)
            events += stream.completed(response)
            store(response, result: stream.result) { [inner] _ in
                inner.sendBody(ByteBuffer(string: events))
                inner.flush()
                inner.endResponse()
            }
        case .done:
            break
        }
    }

    private func giveUp() {
        let abandon = abandonExchange
        abandonExchange = nil
        abandon?()
    }

    func respond(error: APIError, extra: HTTPHeaders) {
        guard case .waiting = mode else { return abortResponse() }
        mode = .done
        inner.respond(error: error, extra: extra)
    }

    /// The worker's answer broke off. Nothing of a collected answer went out yet, so the client
    /// gets a clear 502; a stream gets `response.failed` and a proper end, which is as honest as
    /// a cut connection and easier on clients.
    func abortResponse() {
        let was = mode
        mode = .done
        switch was {
        case .collecting:
            state.metrics.routerError(routeLabels, errorType: "upstream_error")
            inner.respond(error: .upstreamFailed("the worker's answer broke off"), extra: HTTPHeaders())
        case .streaming(var stream):
            inner.sendBody(ByteBuffer(string: stream.failed("the worker's stream broke off")))
            inner.endResponse()
        default:
            inner.abortResponse()
        }
    }

    /// Stores the turn (with `store: true`) and then calls `then(saved)` on the loop.
    private func store(_ response: JSONValue, result: ChatResult, then: @escaping (String) -> Void) {
        let r = turn.request
        guard r.store else { return then("stored") }
        let stored = StoredResponse(id: turn.id, previousResponseID: r.previousResponseID, conversationID: r.conversationID,
                                    input: r.input.map { var i = $0; i.responseID = turn.id; return i }, createdAt: turn.createdAt,
                                    safetyIdentifier: r.safetyIdentifier, model: result.model ?? r.model, raw: response, tenant: turn.tenant)
        // An answer larger than an item may be is not stored, as a request's would be refused;
        // the client has its answer, and the header (or, for a stream, the log) says why.
        if let large = stored.output.first(where: { $0.storedBytes > state.config.historyMaxItemBytes }) {
            state.log(.history).warning("response not stored: an output item is over --history-max-item-bytes",
                                 metadata: ["response_id": "\(turn.id)", "item_bytes": "\(large.storedBytes)"])
            state.metrics.historyOperation("save_response", result: "invalid", seconds: 0)
            return then("too_large")
        }
        // A conversation orders its items by when they were added: the turn's input, then its
        // output, each a millisecond after the one before (equal scores would sort by id).
        let added = Date()
        let items = r.conversationID == nil ? [] : (stored.input + stored.output).enumerated().map { k, item -> ConversationItem in
            var i = item
            i.responseID = turn.id
            i.createdAt = added.addingTimeInterval(Double(k) / 1000)
            return i
        }
        let span = trace?.history("save_response", backend: state.config.history.name)
        if let immediate = state.history as? any ImmediateHistoryStore {
            let started = ContinuousClock.now
            immediate.saveResponseNow(stored, appendingTo: stored.conversationID, items: items)
            state.metrics.historyOperation("save_response", result: "ok", seconds: (ContinuousClock.now - started).seconds)
            RequestTrace.endHistory(span, result: "ok")
            return then("stored")
        }
        let (store, metrics, logger, id, writes, held) = (state.history, state.metrics, state.log(.history), turn.id, state.backgroundWrites, state.heldTurns)
        OffLoop.run(on: loop, {
            let started = ContinuousClock.now
            let outcome: String
            do {
                try await store.saveResponse(stored, appendingTo: stored.conversationID, items: items)
                outcome = "ok"
            } catch {
                outcome = error is HistoryUnavailable ? "unavailable" : "error"
            }
            metrics.historyOperation("save_response", result: outcome, seconds: (ContinuousClock.now - started).seconds)
            RequestTrace.endHistory(span, result: outcome)
            logger.debug("response saved", metadata: ["response_id": "\(id)", "result": "\(outcome)", "items": "\(items.count)"])
            guard outcome != "ok" else { return "stored" }
            // Storage is down: the answer goes out now, and the write is tried again in the
            // background, so a Redis restart costs no turn of the conversation.
            let size = MemoryHistoryStore.bytes(of: stored) + items.reduce(0) { $0 + MemoryHistoryStore.bytes(of: $1) }
            // Held until written (or given up), so the client's next turn through this router finds it.
            let retry = BackgroundWrites.Job(kind: "history", bytes: size, delays: ResponsesClient.retryDelays, attempt: {
                guard held.response(id) != nil else { return true }  // deleted by the client meanwhile
                do {
                    try await store.saveResponse(stored, appendingTo: stored.conversationID, items: items)
                    metrics.historyOperation("save_response", result: "ok_after_retry", seconds: 0)
                    held.release(id)
                    return true
                } catch {
                    return false
                }
            }, lost: {
                held.release(id)
                metrics.historyOperation("save_response", result: "lost", seconds: 0)
                logger.warning("response not stored: storage stayed unavailable", metadata: ["response_id": "\(id)"])
            })
            guard outcome == "unavailable" else {
                logger.warning("response not stored", metadata: ["response_id": "\(id)"])
                return "failed"
            }
            held.hold(stored)
            guard writes.submit(retry) else {
                held.release(id)
                logger.warning("response not stored", metadata: ["response_id": "\(id)"])
                return "failed"
            }
            return "deferred"
        }, then: then)
    }

    /// When a failed write is tried again: about 30 s in all.
    static let retryDelays: [Duration] = [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(14)]
}
