extension JSONValue {
    /// Parses a JSON document (RFC 8259: one value, surrounding whitespace allowed); nil when
    /// the bytes are not JSON, or hold a number no `Double` can represent. What is valid is
    /// `JSONScanner.validate`'s to say (UTF-8, escapes and surrogate pairs, depth): the tree is
    /// then built from bytes known to be valid, with no second set of rules.
    ///
    /// Hand-written because the Responses API parses two documents per turn: Foundation's
    /// JSONDecoder, reached through `Decodable`, tries each type in turn and throws on every
    /// miss, which measured a third of the router's CPU for a Responses turn.
    static func parse(_ bytes: some Sequence<UInt8>) -> JSONValue? {
        let run = { (buffer: UnsafeRawBufferPointer) -> JSONValue? in
            guard (try? JSONScanner.validate(buffer)) != nil else { return nil }
            var builder = JSONValueBuilder(bytes: buffer)
            return builder.value()
        }
        if let result = bytes.withContiguousStorageIfAvailable({ run(UnsafeRawBufferPointer($0)) }) { return result }
        return Array(bytes).withUnsafeBytes(run)
    }

    /// Nesting deeper than this is refused (the scanner's bound).
    static let maxDepth = JSONScanner.maxDepth
}

/// Builds the tree of a document `JSONScanner.validate` accepted: no checks but the one rule
/// that is about values, not syntax (a number must fit a `Double`).
private struct JSONValueBuilder {
    let bytes: UnsafeRawBufferPointer
    var i = 0

    private mutating func skipWhitespace() {
        while i < bytes.count, JSONScanner.isWhitespace(bytes[i]) { i += 1 }
    }

    mutating func value() -> JSONValue? {
        skipWhitespace()
        switch bytes[i] {
        case UInt8(ascii: "{"): return object()
        case UInt8(ascii: "["): return array()
        case UInt8(ascii: "\""): return .string(string())
        case UInt8(ascii: "t"): i += 4; return .bool(true)
        case UInt8(ascii: "f"): i += 5; return .bool(false)
        case UInt8(ascii: "n"): i += 4; return .null
        default: return number()
        }
    }

    private mutating func object() -> JSONValue? {
        i += 1
        var members: [String: JSONValue] = [:]
        skipWhitespace()
        if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
        while true {
            skipWhitespace()
            let key = string()
            skipWhitespace()
            i += 1  // :
            guard let v = value() else { return nil }
            members[key] = v  // a repeated key: the last one counts, as in JSONDecoder
            skipWhitespace()
            i += 1  // , or }
            if bytes[i - 1] == UInt8(ascii: "}") { return .object(members) }
        }
    }

    private mutating func array() -> JSONValue? {
        i += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(elements) }
        while true {
            guard let v = value() else { return nil }
            elements.append(v)
            skipWhitespace()
            i += 1  // , or ]
            if bytes[i - 1] == UInt8(ascii: "]") { return .array(elements) }
        }
    }

    /// A string starting at its opening quote, escapes decoded by the scanner's decoder.
    private mutating func string() -> String {
        i += 1
        let start = i
        var escaped = false
        while bytes[i] != UInt8(ascii: "\"") {
            if bytes[i] == UInt8(ascii: "\\") { escaped = true; i += 2 } else { i += 1 }
        }
        let inner = UnsafeRawBufferPointer(rebasing: bytes[start..<i])
        i += 1
        return escaped ? JSONScanner.decodeEscaped(inner) : String(decoding: inner, as: UTF8.self)
    }

    /// A number: an integer when it has no fraction or exponent and fits, a double otherwise.
    private mutating func number() -> JSONValue? {
        let start = i
        var integral = true
        while i < bytes.count, Self.isNumberByte(bytes[i]) {
            if bytes[i] == UInt8(ascii: ".") || bytes[i] | 0x20 == UInt8(ascii: "e") { integral = false }
            i += 1
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        if integral, let n = Int(text) { return .int(n) }
        guard let d = Double(text), d.isFinite else { return nil }
        return .double(d)
    }

    private static func isNumberByte(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "-") || c == UInt8(ascii: "+") || c == UInt8(ascii: ".") || c | 0x20 == UInt8(ascii: "e")
    }
}
