import Foundation

/// Turns a worker's chat completion stream (`data: {chat.completion.chunk}` SSE) into the
/// Responses API's events, in OpenAI's order: `response.created`, `response.in_progress`, then
/// per output item `output_item.added`, its part or arguments deltas and their `done` events,
/// `output_item.done`, and finally `response.completed` (or `response.incomplete`). Every event
/// carries a `sequence_number`. Pure: bytes in, text out; the exchange writes it.
struct ResponsesStream {
    let responseID: String
    let createdAt: Date
    let request: ResponsesRequest
    /// What the stream has said so far; the final `response` object is built from it.
    private(set) var result = ChatResult()
    private var sequence = 0
    /// The worker's events, framed as every stream the router reads is.
    private var framer = SSEFramer(maxEventBytes: maxEventBytes)
    /// Why the translation gave up (an event or an answer out of bounds); nil while it goes on.
    private(set) var failure: String?

    /// No chunk event a worker sends is anywhere near this; a longer one is a broken worker.
    static let maxEventBytes = 1 << 20
    /// Tool call output items by the worker's tool call index, with their output index.
    private var callSlots: [Int: (slot: Int, output: Int)] = [:]
    private var messageOutputIndex: Int?
    private var nextOutputIndex = 0
    /// The worker's stream said `[DONE]` (a stream that ends without it was cut short).
    private(set) var sawDone = false

    init(responseID: String, createdAt: Date, request: ResponsesRequest) {
        self.responseID = responseID
        self.createdAt = createdAt
        self.request = request
        result.model = request.model
    }

    /// The opening events.
    mutating func start() -> String {
        let shell = ResponsesTranslation.response(id: responseID, createdAt: createdAt, request: request, result: nil)
        return event("response.created", ["response": shell]) + event("response.in_progress", ["response": shell])
    }

    /// The Responses events for whatever worker events `bytes` complete. Stops, with `failure`
    /// set, at an event over `maxEventBytes` or once the answer's text passes the whole-answer
    /// bound: the same bound a whole answer has.
    mutating func feed(_ bytes: some Collection<UInt8>) -> String {
        guard failure == nil else { return "" }
        let out = translate(framer.feed(bytes))
        if failure == nil, framer.overflowed { failure = "the worker sent an event of more than \(Self.maxEventBytes) bytes" }
        return out
    }

    /// The worker's stream ended: its last event, if the empty line after it never came.
    mutating func finish() -> String {
        guard failure == nil, let last = framer.finish() else { return "" }
        return translate([last])
    }

    private mutating func translate(_ events: [SSEFramer.Event]) -> String {
        var out = ""
        for event in events {
            guard let data = event.data else { continue }
            if data.elementsEqual("[DONE]".utf8) {
                sawDone = true
                continue
            }
            guard let chunk = JSONValue.parse(data) else { continue }
            out += apply(chunk)
            if result.byteCount > ResponsesClient.maxCompletionBytes {
                failure = "the worker's answer exceeds \(ResponsesClient.maxCompletionBytes) bytes"
                return out
            }
        }
        return out
    }

    private mutating func apply(_ chunk: JSONValue) -> String {
        var out = ""
        if let m = chunk["model"]?.string { result.model = m }
        ResponsesTranslation.readUsage(chunk["usage"], into: &result)
        guard let choice = chunk["choices"]?.array?.first else { return out }
        if let reason = choice["finish_reason"]?.string { result.finishReason = reason }
        let delta = choice["delta"]
        if let text = delta?["content"]?.string, !text.isEmpty {
            if messageOutputIndex == nil { out += openMessage() }
            result.text += text
            out += event("response.output_text.delta", ["item_id": .string(result.messageID!), "output_index": .int(messageOutputIndex!),
                                                        "content_index": 0, "delta": .string(text)])
        }
        for call in delta?["tool_calls"]?.array ?? [] {
            let index = call["index"]?.int ?? 0
            if callSlots[index] == nil {
                let c = ChatResult.ToolCall(id: HistoryIDs.make("fc"), callID: call["id"]?.string ?? HistoryIDs.make("call"),
                                            name: call["function"]?["name"]?.string ?? "", arguments: "")
                callSlots[index] = (result.toolCalls.count, nextOutputIndex)
                result.toolCalls.append(c)
                out += event("response.output_item.added", ["output_index": .int(nextOutputIndex), "item": ResponsesTranslation.functionCallItem(c, done: false)])
                nextOutputIndex += 1
            }
            let (slot, output) = callSlots[index]!
            if let args = call["function"]?["arguments"]?.string, !args.isEmpty {
                result.toolCalls[slot].arguments += args
                out += event("response.function_call_arguments.delta", ["item_id": .string(result.toolCalls[slot].id), "output_index": .int(output),
                                                                        "delta": .string(args)])
            }
        }
        return out
    }

    private mutating func openMessage() -> String {
        let id = HistoryIDs.make("msg")
        result.messageID = id
        messageOutputIndex = nextOutputIndex
        nextOutputIndex += 1
        return event("response.output_item.added", ["output_index": .int(messageOutputIndex!),
                                                    "item": ResponsesTranslation.messageItem(id: id, text: "", done: false)])
            + event("response.content_part.added", ["item_id": .string(id), "output_index": .int(messageOutputIndex!), "content_index": 0,
                                                    "part": ResponsesTranslation.textPart("")])
    }

    /// The events that close every open item, in output order, once the worker's stream has
    /// ended. A stream that produced nothing still gets an (empty) message, as a non-streamed
    /// answer would.
    mutating func finishItems() -> String {
        var out = ""
        if messageOutputIndex == nil, result.toolCalls.isEmpty { out += openMessage() }
        var closing: [(index: Int, events: [(String, [String: JSONValue])])] = []
        if let index = messageOutputIndex, let id = result.messageID {
            let text = result.text
            let at: [String: JSONValue] = ["item_id": .string(id), "output_index": .int(index), "content_index": 0]
            closing.append((index, [("response.output_text.done", at.merging(["text": .string(text)]) { $1 }),
                                    ("response.content_part.done", at.merging(["part": ResponsesTranslation.textPart(text)]) { $1 }),
                                    ("response.output_item.done", ["output_index": .int(index), "item": ResponsesTranslation.messageItem(id: id, text: text, done: true,
                                                                                                                         truncated: result.finishReason == "length")])]))
        }
        for (slot, index) in callSlots.values {
            let call = result.toolCalls[slot]
            closing.append((index, [("response.function_call_arguments.done", ["item_id": .string(call.id), "output_index": .int(index), "arguments": .string(call.arguments)]),
                                    ("response.output_item.done", ["output_index": .int(index), "item": ResponsesTranslation.functionCallItem(call, done: true)])]))
        }
        for (_, events) in closing.sorted(by: { $0.index < $1.index }) {
            for (type, fields) in events { out += event(type, fields) }
        }
        return out
    }

    /// The final event, carrying the response as it is stored.
    mutating func completed(_ response: JSONValue) -> String {
        event(response["status"]?.string == "incomplete" ? "response.incomplete" : "response.completed", ["response": response])
    }

    /// A `response.failed` event for a stream the worker cut short.
    mutating func failed(_ message: String) -> String {
        var shell = ResponsesTranslation.response(id: responseID, createdAt: createdAt, request: request, result: nil)
        if case .object(var o) = shell {
            o["status"] = "failed"
            o["error"] = ["code": "server_error", "message": .string(message)]
            shell = .object(o)
        }
        return event("response.failed", ["response": shell])
    }

    private mutating func event(_ type: String, _ fields: [String: JSONValue]) -> String {
        var o = fields
        o["type"] = .string(type)
        o["sequence_number"] = .int(sequence)
        sequence += 1
        return "event: \(type)\ndata: \(JSONValue.object(o).render())\n\n"
    }
}
