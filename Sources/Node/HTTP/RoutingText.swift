/// The routing text of an inference request: the bytes cache-aware and prefix
/// policies key on. Chat: the text of every message in order; completions: the prompt;
/// generate: `text`, or `input_ids` as little-endian UInt32s; embeddings and classify: `input`;
/// rerank: `query`. Read straight from the request bytes the scanner already validated.
enum RoutingText {
    /// Prefixes past this many bytes never change a routing decision; the cap keeps a
    /// multi-megabyte prompt from costing a multi-megabyte copy and tree insert.
    static let maxBytes = 1 << 20

    static func extract(_ kind: Route.Inference, members: [JSONScanner.Member], bytes b: UnsafeRawBufferPointer) -> [UInt8] {
        var out: [UInt8] = []
        func member(_ name: StaticString) -> JSONScanner.Member? { members.last { $0.keyEquals(name, in: b) } }
        switch kind {
        case .chat:
            guard let messages = member("messages"), messages.kind == .array else { break }
            JSONScanner.forEachElement(b, array: messages.value) { message in
                guard b[message.lowerBound] == UInt8(ascii: "{") else { return }
                JSONScanner.forEachMember(b, object: message) { key, value in
                    if JSONScanner.keyMatches(b, key, "content") { appendText(b, value, to: &out) }
                }
            }
        case .completions:
            if let prompt = member("prompt") { appendText(b, prompt.value, to: &out) }
        case .generate:
            if let text = member("text") { appendText(b, text.value, to: &out) }
            else if let ids = member("input_ids") { appendText(b, ids.value, to: &out) }
        case .embeddings, .classify:
            if let input = member("input") ?? member("text") { appendText(b, input.value, to: &out) }
        case .rerank:
            if let query = member("query") { appendText(b, query.value, to: &out) }
        }
        return out
    }

    /// Appends a string, the strings of an array (content parts' `text`), or integers as tokens.
    private static func appendText(_ b: UnsafeRawBufferPointer, _ value: Range<Int>, to out: inout [UInt8]) {
        guard out.count < maxBytes, !value.isEmpty else { return }
        switch b[value.lowerBound] {
        case UInt8(ascii: "\""):
            let inner = UnsafeRawBufferPointer(rebasing: b[(value.lowerBound + 1)..<(value.upperBound - 1)])
            if inner.contains(UInt8(ascii: "\\")) {
                out.append(contentsOf: JSONScanner.decodeEscaped(inner).utf8.prefix(maxBytes - out.count))
            } else {
                out.append(contentsOf: inner.prefix(maxBytes - out.count))
            }
        case UInt8(ascii: "["):
            JSONScanner.forEachElement(b, array: value) { element in appendText(b, element, to: &out) }
        case UInt8(ascii: "{"):
            JSONScanner.forEachMember(b, object: value) { key, v in
                if JSONScanner.keyMatches(b, key, "text") { appendText(b, v, to: &out) }
            }
        case UInt8(ascii: "0")...UInt8(ascii: "9"):
            // A token id: four little-endian bytes, so token prompts hash like text ones.
            var n: UInt32 = 0
            for c in b[value] {
                guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { break }
                n = n &* 10 &+ UInt32(c - UInt8(ascii: "0"))
            }
            withUnsafeBytes(of: n.littleEndian) { out.append(contentsOf: $0) }
        default:
            break
        }
    }
}
