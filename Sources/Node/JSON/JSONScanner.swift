/// A validating, non-allocating scan of a JSON request body. The router must reject malformed
/// JSON (400) and read a handful of top-level fields (`model`, `stream`, later the routing
/// text) on every inference request, without paying for a full object tree.
///
/// The scanner checks the whole document against RFC 8259 (including UTF-8 validity and a
/// nesting limit, so hostile input cannot exhaust the stack) and records where each top-level
/// member's value lies, so callers decode only what they need. The same walker, told the
/// document is already validated (`trusted`), skips the checks and walks nested arrays and
/// objects for `RoutingText`: one walker, one whitespace rule, one set of bugs.
public struct JSONScanner {
    public struct Failure: Error, Equatable, CustomStringConvertible {
        public let offset: Int
        public let reason: String
        public var description: String { "\(reason) at byte \(offset)" }
    }

    public enum Kind: Equatable { case string, number, object, array, bool, null }

    /// A top-level member: the key's raw bytes (escapes undecoded) and the value's byte range.
    public struct Member {
        public let key: Range<Int>
        public let value: Range<Int>
        public let kind: Kind
        public let keyHasEscapes: Bool
    }

    /// Deeper nesting than this is refused: no legitimate request comes close.
    public static let maxDepth = 256

    private let bytes: UnsafeRawBufferPointer
    private var i = 0
    /// The document was validated before: walk it without checking it again.
    private let trusted: Bool

    private init(_ bytes: UnsafeRawBufferPointer, at start: Int = 0, trusted: Bool = false) {
        self.bytes = bytes
        self.i = start
        self.trusted = trusted
    }

    /// Validates `bytes` as a JSON object and returns its top-level members in order.
    public static func scanObject(_ bytes: UnsafeRawBufferPointer) throws(Failure) -> [Member] {
        var s = JSONScanner(bytes)
        s.skipWhitespace()
        guard s.i < bytes.count, bytes[s.i] == UInt8(ascii: "{") else {
            throw s.fail(s.i < bytes.count ? "expected a JSON object" : "empty body")
        }
        var members: [Member] = []
        try s.object(depth: 1, members: &members)
        s.skipWhitespace()
        guard s.i == bytes.count else { throw s.fail("unexpected data after the JSON value") }
        return members
    }

    /// Validates `bytes` as one JSON document of any kind (RFC 8259: one value, surrounding
    /// whitespace allowed): the rules `JSONValue.parse` builds on, so the router has one
    /// definition of valid JSON.
    public static func validate(_ bytes: UnsafeRawBufferPointer) throws(Failure) {
        var s = JSONScanner(bytes)
        s.skipWhitespace()
        _ = try s.value(depth: 0)
        s.skipWhitespace()
        guard s.i == bytes.count else { throw s.fail("unexpected data after the JSON value") }
    }

    private func fail(_ reason: String) -> Failure { Failure(offset: i, reason: reason) }

    private mutating func skipWhitespace() {
        while i < bytes.count, Self.isWhitespace(bytes[i]) { i += 1 }
    }

    /// JSON's four whitespace bytes.
    static func isWhitespace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 }

    private mutating func expect(_ c: UInt8, _ what: String) throws(Failure) {
        skipWhitespace()
        guard i < bytes.count, bytes[i] == c else { throw fail("expected \(what)") }
        i += 1
    }

    private mutating func object(depth: Int, members: inout [Member]) throws(Failure) {
        guard depth <= Self.maxDepth else { throw fail("JSON nested deeper than \(Self.maxDepth)") }
        i += 1  // {
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return }
        while true {
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let keyStart = i + 1
            let escapes = try string()
            let key = keyStart..<(i - 1)
            try expect(UInt8(ascii: ":"), "':'")
            skipWhitespace()
            let valueStart = i
            let kind = try value(depth: depth)
            if depth == 1 { members.append(Member(key: key, value: valueStart..<i, kind: kind, keyHasEscapes: escapes)) }
            skipWhitespace()
            guard i < bytes.count else { throw fail("unterminated object") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "}") { i += 1; return }
            throw fail("expected ',' or '}'")
        }
    }

    private mutating func array(depth: Int) throws(Failure) {
        guard depth <= Self.maxDepth else { throw fail("JSON nested deeper than \(Self.maxDepth)") }
        i += 1  // [
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return }
        var ignored: [Member] = []
        while true {
            skipWhitespace()
            _ = try value(depth: depth, nested: &ignored)
            skipWhitespace()
            guard i < bytes.count else { throw fail("unterminated array") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "]") { i += 1; return }
            throw fail("expected ',' or ']'")
        }
    }

    private mutating func value(depth: Int) throws(Failure) -> Kind {
        var ignored: [Member] = []
        return try value(depth: depth, nested: &ignored)
    }

    private mutating func value(depth: Int, nested: inout [Member]) throws(Failure) -> Kind {
        guard i < bytes.count else { throw fail("expected a value") }
        switch bytes[i] {
        case UInt8(ascii: "{"): try object(depth: depth + 1, members: &nested); return .object
        case UInt8(ascii: "["): try array(depth: depth + 1); return .array
        case UInt8(ascii: "\""): _ = try string(); return .string
        case UInt8(ascii: "t"): try literal("true"); return .bool
        case UInt8(ascii: "f"): try literal("false"); return .bool
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try number(); return .number
        default: throw fail("unexpected character")
        }
    }

    private mutating func literal(_ word: StaticString) throws(Failure) {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { throw fail("invalid literal") }
        let w = word.utf8Start
        for k in 0..<n where bytes[i + k] != w[k] { throw fail("invalid literal") }
        i += n
    }

    private mutating func digits() -> Int {
        let start = i
        while i < bytes.count, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9") { i += 1 }
        return i - start
    }

    private mutating func number() throws(Failure) {
        if bytes[i] == UInt8(ascii: "-") { i += 1 }
        guard i < bytes.count else { throw fail("invalid number") }
        if bytes[i] == UInt8(ascii: "0") { i += 1 } else if digits() == 0 { throw fail("invalid number") }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            guard digits() > 0 else { throw fail("invalid number") }
        }
        if i < bytes.count, bytes[i] | 0x20 == UInt8(ascii: "e") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard digits() > 0 else { throw fail("invalid number") }
        }
    }

    /// Scans a string starting at its opening quote; returns whether it holds escapes.
    private mutating func string() throws(Failure) -> Bool {
        i += 1
        var escapes = false
        if trusted {
            while bytes[i] != UInt8(ascii: "\"") {
                if bytes[i] == UInt8(ascii: "\\") { escapes = true; i += 2 } else { i += 1 }
            }
            i += 1
            return escapes
        }
        while i < bytes.count {
            let c = bytes[i]
            switch c {
            case UInt8(ascii: "\""):
                i += 1
                return escapes
            case UInt8(ascii: "\\"):
                escapes = true
                i += 1
                guard i < bytes.count else { throw fail("unterminated string") }
                switch bytes[i] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                     UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 1
                case UInt8(ascii: "u"):
                    let scalar = try hex4(at: i + 1)
                    i += 5
                    // A surrogate must come as a pair, high then an escaped low: a lone one is
                    // not a character, and parsers (the worker's, serde's) disagree on it.
                    if (0xDC00..<0xE000).contains(scalar) { throw fail("lone low surrogate in \\u escape") }
                    if (0xD800..<0xDC00).contains(scalar) {
                        guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u"),
                              (0xDC00..<0xE000).contains(try hex4(at: i + 2)) else { throw fail("unpaired surrogate in \\u escape") }
                        i += 6
                    }
                default: throw fail("invalid escape")
                }
            case 0..<0x20: throw fail("control character in string")
            case 0x20..<0x80: i += 1
            default: try utf8Sequence()
            }
        }
        throw fail("unterminated string")
    }

    /// Validates one multi-byte UTF-8 sequence (no overlongs, no surrogates, ≤ U+10FFFF).
    private mutating func utf8Sequence() throws(Failure) {
        let b0 = bytes[i]
        let n: Int
        var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
        switch b0 {
        case 0xC2...0xDF: n = 1
        case 0xE0: n = 2; lo = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: n = 2
        case 0xED: n = 2; hi = 0x9F
        case 0xF0: n = 3; lo = 0x90
        case 0xF1...0xF3: n = 3
        case 0xF4: n = 3; hi = 0x8F
        default: throw fail("invalid UTF-8")
        }
        guard i + n < bytes.count else { throw fail("invalid UTF-8") }
        let b1 = bytes[i + 1]
        guard b1 >= lo, b1 <= hi else { throw fail("invalid UTF-8") }
        for k in stride(from: 2, through: n, by: 1) where bytes[i + k] & 0xC0 != 0x80 { throw fail("invalid UTF-8") }
        i += n + 1
    }

    /// The four hex digits at `at`, as a number.
    private func hex4(at: Int) throws(Failure) -> UInt32 {
        guard at + 4 <= bytes.count else { throw fail("invalid \\u escape") }
        var v: UInt32 = 0
        for k in 0..<4 {
            let c = bytes[at + k]
            guard Self.isHex(c) else { throw fail("invalid \\u escape") }
            let lower = c | 0x20
            v = v << 4 | UInt32(lower >= UInt8(ascii: "a") ? lower - UInt8(ascii: "a") + 10 : c - UInt8(ascii: "0"))
        }
        return v
    }

    private static func isHex(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || (c | 0x20 >= UInt8(ascii: "a") && c | 0x20 <= UInt8(ascii: "f"))
    }
}

// MARK: walking an already validated document

extension JSONScanner {
    /// True when the raw key bytes at `key` are exactly `name`.
    static func keyMatches(_ b: UnsafeRawBufferPointer, _ key: Range<Int>, _ name: StaticString) -> Bool {
        guard key.count == name.utf8CodeUnitCount else { return false }
        let p = name.utf8Start
        for k in 0..<key.count where b[key.lowerBound + k] != p[k] { return false }
        return true
    }

    /// Calls `body` with the range of each element of the array at `range`, in a document
    /// `scanObject` accepted.
    static func forEachElement(_ b: UnsafeRawBufferPointer, array range: Range<Int>, _ body: (Range<Int>) -> Void) {
        var s = JSONScanner(b, at: range.lowerBound + 1, trusted: true)
        s.skipWhitespace()
        guard b[s.i] != UInt8(ascii: "]") else { return }
        while true {
            s.skipWhitespace()
            let start = s.i
            guard (try? s.value(depth: 1)) != nil else { return }
            body(start..<s.i)
            s.skipWhitespace()
            guard s.i < range.upperBound, b[s.i] == UInt8(ascii: ",") else { return }
            s.i += 1
        }
    }

    /// How many elements the array at `range` has, counting no further than `limit + 1`: a
    /// caller that bounds a count learns "too many" without walking a list of millions.
    static func countElements(_ b: UnsafeRawBufferPointer, array range: Range<Int>, upTo limit: Int) -> Int {
        var s = JSONScanner(b, at: range.lowerBound + 1, trusted: true)
        s.skipWhitespace()
        guard b[s.i] != UInt8(ascii: "]") else { return 0 }
        var n = 0
        while n <= limit {
            s.skipWhitespace()
            guard (try? s.value(depth: 1)) != nil else { return n }
            n += 1
            s.skipWhitespace()
            guard s.i < range.upperBound, b[s.i] == UInt8(ascii: ",") else { return n }
            s.i += 1
        }
        return n
    }

    /// Calls `body` with each member of the object at `range` (key without quotes, value range),
    /// in a document `scanObject` accepted.
    static func forEachMember(_ b: UnsafeRawBufferPointer, object range: Range<Int>, _ body: (Range<Int>, Range<Int>) -> Void) {
        var s = JSONScanner(b, at: range.lowerBound + 1, trusted: true)
        s.skipWhitespace()
        guard b[s.i] != UInt8(ascii: "}") else { return }
        while true {
            s.skipWhitespace()
            let keyStart = s.i + 1
            guard (try? s.string()) != nil else { return }
            let key = keyStart..<(s.i - 1)
            s.skipWhitespace()
            s.i += 1  // ':'
            s.skipWhitespace()
            let start = s.i
            guard (try? s.value(depth: 1)) != nil else { return }
            body(key, start..<s.i)
            s.skipWhitespace()
            guard s.i < range.upperBound, b[s.i] == UInt8(ascii: ",") else { return }
            s.i += 1
        }
    }
}
