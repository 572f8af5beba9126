import Foundation
import Primitives

/// A JSON document as a value, for the control plane: the bodies of the worker APIs, status
/// answers, what the mesh replicates about a worker, and what workers answer on `/v1/models` and
/// `/get_load`. Typed (no `[String: Any]`), written with keys sorted so answers are stable.
/// The inference path never builds one: it reads requests with `JSONScanner`.
enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    var string: String? { if case .string(let s) = self { return s }; return nil }
    var int: Int? { if case .int(let i) = self { return i }; return nil }
    /// Any number, integral or not.
    var number: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }
    var object: [String: JSONValue]? { if case .object(let o) = self { return o }; return nil }
    var array: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    /// A string-to-string object (labels), or nil when it is anything else.
    var stringMap: [String: String]? {
        guard let o = object else { return nil }
        var out: [String: String] = [:]
        for (k, v) in o {
            guard let s = v.string else { return nil }
            out[k] = s
        }
        return out
    }

    /// About how many bytes the value takes as JSON text, without rendering it: what a store
    /// that bounds its memory counts a record as.
    var byteEstimate: Int {
        switch self {
        case .null, .bool: return 5
        case .int, .double: return 12
        case .string(let s): return s.utf8.count + 2
        case .array(let a): return a.reduce(2) { $0 + $1.byteEstimate + 1 }
        case .object(let o): return o.reduce(2) { $0 + $1.key.utf8.count + 4 + $1.value.byteEstimate }
        }
    }

    /// Compact JSON text with object keys sorted.
    func render() -> String {
        var out = ""
        write(to: &out)
        return out
    }

    private func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d): out += d.isFinite ? (d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : String(d)) : "null"
        case .string(let s): JSONString.append(s, to: &out)
        case .array(let a):
            out += "["
            for (k, v) in a.enumerated() {
                if k > 0 { out += "," }
                v.write(to: &out)
            }
            out += "]"
        case .object(let o):
            out += "{"
            for (k, key) in o.keys.sorted().enumerated() {
                if k > 0 { out += "," }
                JSONString.append(key, to: &out)
                out += ":"
                o[key]!.write(to: &out)
            }
            out += "}"
        }
    }

}

extension JSONValue: Decodable {
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral {
    init(stringLiteral s: String) { self = .string(s) }
    init(integerLiteral i: Int) { self = .int(i) }
    init(booleanLiteral b: Bool) { self = .bool(b) }
    init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    init(dictionaryLiteral pairs: (String, JSONValue)...) { self = .object(Dictionary(pairs, uniquingKeysWith: { _, last in last })) }
    init(nilLiteral: ()) { self = .null }
}

extension JSONValue {
    init(_ s: String?) { self = s.map { .string($0) } ?? .null }
    init(_ i: Int?) { self = i.map { .int($0) } ?? .null }
    init(_ b: Bool) { self = .bool(b) }
    init(_ strings: [String]) { self = .array(strings.map { .string($0) }) }
    init(_ map: [String: String]) { self = .object(map.mapValues { .string($0) }) }
}
