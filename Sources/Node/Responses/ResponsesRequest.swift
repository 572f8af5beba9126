import Foundation

/// A `POST /v1/responses` body, checked: what the gateway needs to build the chat completion it
/// sends a worker and the `response` object it answers. Anything malformed is a 400 naming the
/// field; tools the gateway cannot run (web search, file search, …) are refused by name rather
/// than silently dropped.
struct ResponsesRequest {
    var model: String?
    var instructions: String?
    /// This turn's input, as items (a plain string is one user message).
    var input: [ConversationItem]
    var previousResponseID: String?
    var conversationID: String?
    /// Function tools in the Responses shape (`{"type":"function","name",…}`).
    var tools: [JSONValue]
    var toolChoice: JSONValue?
    var parallelToolCalls: Bool?
    var maxOutputTokens: Int?
    var temperature: Double?
    var topP: Double?
    /// `safety_identifier`, or the older `user`.
    var safetyIdentifier: String?
    var user: String?
    var metadata: [String: String]
    var store: Bool
    var stream: Bool

    /// Items a turn may bring, so one request cannot make the gateway store an unbounded list.
    static let maxInputItems = 1000

    static func parse(_ body: some Sequence<UInt8>, now: Date) throws(APIError) -> ResponsesRequest {
        guard let json = JSONValue.parse(body), let o = json.object else {
            throw APIError(.invalidJSON, "the body must be a JSON object")
        }
        func string(_ key: String, _ code: APIError.Code) throws(APIError) -> String? {
            switch o[key] {
            case nil, .null?: return nil
            case .string(let s)?: return s
            default: throw APIError(code, "'\(key)' must be a string")
            }
        }
        func number(_ key: String, _ code: APIError.Code, _ range: ClosedRange<Double>) throws(APIError) -> Double? {
            switch o[key] {
            case nil, .null?: return nil
            case .int(let i)? where range.contains(Double(i)): return Double(i)
            case .double(let d)? where range.contains(d): return d
            default: throw APIError(code, "'\(key)' must be a number from \(range.lowerBound) to \(range.upperBound)")
            }
        }
        func bool(_ key: String, _ code: APIError.Code, _ fallback: Bool) throws(APIError) -> Bool {
            switch o[key] {
            case nil, .null?: return fallback
            case .bool(let b)?: return b
            default: throw APIError(code, "'\(key)' must be true or false")
            }
        }

        var r = ResponsesRequest(input: [], tools: [], metadata: [:], store: true, stream: false)
        r.model = try string("model", .invalidModel)
        r.instructions = try string("instructions", .invalidInstructions)
        r.previousResponseID = try string("previous_response_id", .invalidPreviousResponseID)
        if let id = r.previousResponseID, !HistoryIDs.isValid(id) {
            throw APIError(.invalidPreviousResponseID, "'previous_response_id' is not a valid id")
        }
        switch o["conversation"] {
        case nil, .null?: break
        case .string(let id)?: r.conversationID = id
        case .object(let c)?: r.conversationID = c["id"]?.string
        default: break
        }
        if o["conversation"] != nil, o["conversation"] != .null {
            guard let id = r.conversationID, HistoryIDs.isValid(id) else {
                throw APIError(.invalidConversation, "'conversation' must be a conversation id or {\"id\": …}")
            }
        }
        if r.previousResponseID != nil, r.conversationID != nil {
            throw APIError(.conflictingHistory, "give 'previous_response_id' or 'conversation', not both")
        }
        r.input = try input(o["input"], now: now)
        r.tools = try tools(o["tools"])
        if let choice = o["tool_choice"], choice != .null {
            guard choice.string.map({ ["auto", "none", "required"].contains($0) }) ?? (choice["type"]?.string == "function" && choice["name"]?.string != nil) else {
                throw APIError(.invalidToolChoice, "'tool_choice' must be auto, none, required or {\"type\": \"function\", \"name\": …}")
            }
            r.toolChoice = choice
        }
        if o["parallel_tool_calls"] != nil { r.parallelToolCalls = try bool("parallel_tool_calls", .invalidParallelToolCalls, true) }
        if let n = try number("max_output_tokens", .invalidMaxOutputTokens, 1...1e9) {
            guard n == n.rounded() else { throw APIError(.invalidMaxOutputTokens, "'max_output_tokens' must be a whole number") }
            r.maxOutputTokens = Int(n)
        }
        r.temperature = try number("temperature", .invalidTemperature, 0...2)
        r.topP = try number("top_p", .invalidTopP, 0...1)
        r.user = try string("user", .invalidUser)
        r.safetyIdentifier = try string("safety_identifier", .invalidSafetyIdentifier) ?? r.user
        if let s = r.safetyIdentifier, s.utf8.count > 256 || s.utf8.contains(where: { $0 < 0x20 }) {
            throw APIError(.invalidSafetyIdentifier, "'safety_identifier' is at most 256 printable characters")
        }
        r.metadata = try ConversationRoutes.metadata(o["metadata"])
        r.store = try bool("store", .invalidStore, true)
        r.stream = try bool("stream", .invalidStream, false)
        return r
    }

    private static func input(_ value: JSONValue?, now: Date) throws(APIError) -> [ConversationItem] {
        switch value {
        case .string(let text)?:
            return [ConversationItem(id: HistoryIDs.make("msg"), type: "message", role: "user",
                                     content: [["type": "input_text", "text": .string(text)]], status: "completed", createdAt: now)]
        case .array(let list)?:
            guard !list.isEmpty else { throw APIError(.invalidInput, "'input' must not be empty") }
            guard list.count <= maxInputItems else { throw APIError(.tooManyItems, "'input' holds at most \(maxInputItems) items") }
            return try ConversationItem.parseAll(list, now: now, field: "input", code: .invalidInput)
        default:
            throw APIError(.invalidInput, "'input' must be a string or an array of items")
        }
    }

    private static func tools(_ value: JSONValue?) throws(APIError) -> [JSONValue] {
        guard let value, value != .null else { return [] }
        guard let list = value.array else { throw APIError(.invalidTools, "'tools' must be an array") }
        return try list.enumerated().map { (i, tool) throws(APIError) -> JSONValue in
            guard let type = tool["type"]?.string else { throw APIError(.invalidTools, "tools[\(i)] needs a type") }
            guard type == "function" else {
                throw APIError(.unsupportedTool, "tools[\(i)]: '\(type.prefix(64))' tools are not run by this gateway; only function tools are")
            }
            guard tool["name"]?.string?.isEmpty == false else { throw APIError(.invalidTools, "tools[\(i)] needs a name") }
            return tool
        }
    }
}
