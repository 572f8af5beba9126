import Foundation

/// What a worker's chat completion produced, gathered from one JSON answer or from a stream of
/// chunks: the same value builds the `response` object either way, so a streamed response and
/// its stored copy cannot differ.
struct ChatResult: Equatable {
    struct ToolCall: Equatable {
        /// The output item's id (`fc_…`).
        var id: String
        /// The worker's call id, which the client echoes in `function_call_output`.
        var callID: String
        var name: String
        var arguments: String
    }
    var model: String?
    var text = ""
    /// The assistant message item's id, assigned when its first text arrives.
    var messageID: String?
    var toolCalls: [ToolCall] = []
    var finishReason: String?
    var inputTokens = 0
    var outputTokens = 0
    var cachedTokens = 0

    /// The bytes of what the worker generated (text, tool call names, ids and arguments), which
    /// a stream's translation bounds as a whole answer's size is bounded.
    var byteCount: Int {
        text.utf8.count + toolCalls.reduce(0) { $0 + $1.arguments.utf8.count + $1.name.utf8.count + $1.callID.utf8.count + 32 }
    }
}

/// The Responses API as chat completions: the gateway translates both ways, so any SGLang or
/// vLLM worker (which all serve `/v1/chat/completions`) answers it. Pure functions of their
/// inputs, tested without a socket.
enum ResponsesTranslation {
    // MARK: request → chat completion

    /// The chat messages for a turn: the instructions as a system message, then the history
    /// and the new input, in order. Consecutive function calls become one assistant message
    /// with several `tool_calls`, as chat templates expect; reasoning items are not replayed.
    static func messages(instructions: String?, items: [ConversationItem]) -> [JSONValue] {
        var out: [JSONValue] = []
        if let instructions, !instructions.isEmpty { out.append(["role": "system", "content": .string(instructions)]) }
        var pendingCalls: [JSONValue] = []
        func flushCalls() {
            guard !pendingCalls.isEmpty else { return }
            out.append(["role": "assistant", "content": .null, "tool_calls": .array(pendingCalls)])
            pendingCalls = []
        }
        for item in items {
            switch item.type {
            case "function_call":
                let f = item.content
                pendingCalls.append(["id": .string(f["call_id"]?.string ?? item.id), "type": "function",
                                     "function": ["name": .string(f["name"]?.string ?? ""), "arguments": .string(f["arguments"]?.string ?? "{}")]])
            case "function_call_output":
                flushCalls()
                let output = item.content["output"]
                out.append(["role": "tool", "tool_call_id": .string(item.content["call_id"]?.string ?? ""),
                            "content": .string(output?.string ?? output?.render() ?? "")])
            case "message":
                flushCalls()
                // Chat templates know system, user, assistant (and tool); `developer` is the
                // Responses API's name for system instructions.
                let role = item.role == "developer" ? "system" : (item.role ?? "user")
                out.append(["role": .string(role), "content": chatContent(item.content)])
            default:
                continue
            }
        }
        flushCalls()
        return out
    }

    /// A message's parts as chat content: a plain string when all of it is text (what every
    /// chat template takes), otherwise chat parts (`text`, `image_url`).
    static func chatContent(_ content: JSONValue) -> JSONValue {
        if let s = content.string { return .string(s) }
        let parts = content.array ?? []
        let texts = parts.compactMap { $0["text"]?.string }
        if texts.count == parts.count { return .string(texts.joined()) }
        return .array(parts.compactMap { part -> JSONValue? in
            if let t = part["text"]?.string { return ["type": "text", "text": .string(t)] }
            if part["type"]?.string == "input_image" {
                let url = part["image_url"]?.string ?? part["image_url"]?["url"]?.string
                return url.map { ["type": "image_url", "image_url": ["url": .string($0)]] }
            }
            return nil
        })
    }

    /// The chat completion request a worker receives for this turn.
    static func chatBody(_ r: ResponsesRequest, messages: [JSONValue]) -> JSONValue {
        var o: [String: JSONValue] = ["messages": .array(messages), "stream": .bool(r.stream)]
        if let m = r.model { o["model"] = .string(m) }
        if r.stream { o["stream_options"] = ["include_usage": true] }
        if let n = r.maxOutputTokens { o["max_tokens"] = .int(n) }
        if let t = r.temperature { o["temperature"] = .double(t) }
        if let p = r.topP { o["top_p"] = .double(p) }
        if let u = r.user ?? r.safetyIdentifier { o["user"] = .string(u) }
        if !r.tools.isEmpty {
            o["tools"] = .array(r.tools.map { tool in
                var f: [String: JSONValue] = ["name": tool["name"] ?? ""]
                for key in ["description", "parameters", "strict"] { if let v = tool[key], v != .null { f[key] = v } }
                return ["type": "function", "function": .object(f)]
            })
        }
        if let choice = r.toolChoice {
            if let name = choice["name"]?.string {
                o["tool_choice"] = ["type": "function", "function": ["name": .string(name)]]
            } else {
                o["tool_choice"] = choice
            }
        }
        if let p = r.parallelToolCalls { o["parallel_tool_calls"] = .bool(p) }
        return .object(o)
    }

    // MARK: chat completion → response

    /// A worker's complete (non-streamed) chat completion; nil when it is not one.
    static func result(ofCompletion json: JSONValue) -> ChatResult? {
        guard let choice = json["choices"]?.array?.first, let message = choice["message"] else { return nil }
        var r = ChatResult(model: json["model"]?.string)
        r.text = message["content"]?.string ?? ""
        if !r.text.isEmpty { r.messageID = HistoryIDs.make("msg") }
        for call in message["tool_calls"]?.array ?? [] {
            r.toolCalls.append(.init(id: HistoryIDs.make("fc"), callID: call["id"]?.string ?? HistoryIDs.make("call"),
                                     name: call["function"]?["name"]?.string ?? "", arguments: call["function"]?["arguments"]?.string ?? ""))
        }
        if r.messageID == nil, r.toolCalls.isEmpty { r.messageID = HistoryIDs.make("msg") }
        r.finishReason = choice["finish_reason"]?.string
        readUsage(json["usage"], into: &r)
        return r
    }

    static func readUsage(_ usage: JSONValue?, into r: inout ChatResult) {
        guard let usage, usage != .null else { return }
        r.inputTokens = usage["prompt_tokens"]?.int ?? 0
        r.outputTokens = usage["completion_tokens"]?.int ?? 0
        r.cachedTokens = usage["prompt_tokens_details"]?["cached_tokens"]?.int ?? 0
    }

    /// The assistant message output item: `in_progress` while streaming, then `completed`, or
    /// `incomplete` when the worker stopped at the token limit (as OpenAI marks it).
    static func messageItem(id: String, text: String, done: Bool, truncated: Bool = false) -> JSONValue {
        ["id": .string(id), "type": "message", "role": "assistant", "status": .string(done ? (truncated ? "incomplete" : "completed") : "in_progress"),
         "content": done ? [textPart(text)] : []]
    }

    static func textPart(_ text: String) -> JSONValue { ["type": "output_text", "text": .string(text), "annotations": []] }

    static func functionCallItem(_ call: ChatResult.ToolCall, done: Bool) -> JSONValue {
        ["id": .string(call.id), "type": "function_call", "call_id": .string(call.callID), "name": .string(call.name),
         "arguments": .string(done ? call.arguments : ""), "status": .string(done ? "completed" : "in_progress")]
    }

    /// The output items, message first.
    static func outputItems(_ r: ChatResult) -> [JSONValue] {
        var items: [JSONValue] = []
        if let id = r.messageID { items.append(messageItem(id: id, text: r.text, done: true, truncated: r.finishReason == "length")) }
        items += r.toolCalls.map { functionCallItem($0, done: true) }
        return items
    }

    /// The `response` object. With a result it is final (`completed`, or `incomplete` when the
    /// worker stopped at the token limit); without one it is the `in_progress` shell that a
    /// stream opens with.
    static func response(id: String, createdAt: Date, request r: ResponsesRequest, result: ChatResult?) -> JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(id), "object": "response", "created_at": .int(Int(createdAt.timeIntervalSince1970)),
            "model": .string(result?.model ?? r.model ?? ""), "output": .array(result.map(outputItems) ?? []),
            "status": "in_progress", "error": .null, "incomplete_details": .null,
            "instructions": JSONValue(r.instructions), "previous_response_id": JSONValue(r.previousResponseID),
            "metadata": JSONValue(r.metadata), "max_output_tokens": JSONValue(r.maxOutputTokens),
            "temperature": r.temperature.map { .double($0) } ?? .null, "top_p": r.topP.map { .double($0) } ?? .null,
            "tools": .array(r.tools), "tool_choice": r.toolChoice ?? "auto", "parallel_tool_calls": .bool(r.parallelToolCalls ?? true),
            "store": .bool(r.store), "text": ["format": ["type": "text"]], "usage": .null,
            "safety_identifier": JSONValue(r.safetyIdentifier), "user": JSONValue(r.user),
        ]
        if let c = r.conversationID { o["conversation"] = ["id": .string(c)] }
        if let result {
            if result.finishReason == "length" {
                o["status"] = "incomplete"
                o["incomplete_details"] = ["reason": "max_output_tokens"]
            } else {
                o["status"] = "completed"
            }
            o["usage"] = ["input_tokens": .int(result.inputTokens), "output_tokens": .int(result.outputTokens),
                          "total_tokens": .int(result.inputTokens + result.outputTokens),
                          "input_tokens_details": ["cached_tokens": .int(result.cachedTokens)],
                          "output_tokens_details": ["reasoning_tokens": 0]]
        }
        return .object(o)
    }
}
