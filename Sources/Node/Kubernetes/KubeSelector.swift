import Foundation

/// A label selector as the reference gateway takes it (`--selector app=sglang-worker
/// tier=inference`: every pair must match), checked against Kubernetes' label syntax at start-up
/// so a typo is refused by name instead of matching nothing for ever.
///
/// The API server filters with it (`labelSelector=app=sglang-worker,tier=inference`); the router
/// checks again on its side, so a pod whose labels stop matching is treated as gone even if a
/// server sent it anyway.
struct KubeSelector: Equatable, Sendable, CustomStringConvertible {
    /// Sorted by key: one spelling per selector.
    let pairs: [(key: String, value: String)]

    static func == (a: KubeSelector, b: KubeSelector) -> Bool { a.pairs.elementsEqual(b.pairs) { $0 == $1 } }

    /// `flag` names the option in errors. Each item is `key=value`; an item holding commas is
    /// split at them too (`app=a,tier=b`, the API's own spelling).
    init(_ items: [String], flag: String) throws(ConfigError) {
        var seen: [String: String] = [:]
        for item in items.flatMap({ $0.split(separator: ",", omittingEmptySubsequences: true) }) {
            let text = item.trimmingCharacters(in: .whitespaces)
            guard let eq = text.firstIndex(of: "=") else { throw ConfigError("\(flag) \(text.prefix(80)): expected key=value") }
            var key = String(text[..<eq]), value = String(text[text.index(after: eq)...])
            if value.hasPrefix("=") { value.removeFirst() }  // key==value, the API's other spelling
            key = key.trimmingCharacters(in: .whitespaces)
            value = value.trimmingCharacters(in: .whitespaces)
            guard Self.validKey(key) else {
                throw ConfigError("\(flag) \(text.prefix(80)): '\(key.prefix(80))' is not a label key (an optional DNS prefix and '/', then up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)")
            }
            guard value.isEmpty || Self.validName(value) else {
                throw ConfigError("\(flag) \(text.prefix(80)): '\(value.prefix(80))' is not a label value (up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)")
            }
            if let other = seen[key], other != value { throw ConfigError("\(flag): \(key) is given twice, as \(other) and \(value)") }
            seen[key] = value
        }
        guard !seen.isEmpty else { throw ConfigError("\(flag): give at least one key=value") }
        pairs = seen.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) }
    }

    /// The query parameter's value: `k1=v1,k2=v2`.
    var description: String { pairs.map { "\($0.key)=\($0.value)" }.joined(separator: ",") }

    func matches(_ labels: [String: String]) -> Bool { pairs.allSatisfy { labels[$0.key] == $0.value } }

    /// A label key: `[prefix/]name`, the prefix a DNS subdomain of up to 253 characters.
    static func validKey(_ key: String) -> Bool {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        switch parts.count {
        case 1: return validName(key)
        case 2: return validDNSSubdomain(String(parts[0])) && validName(String(parts[1]))
        default: return false
        }
    }

    /// A label name or value: 1 to 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
    static func validName(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard (1...63).contains(u.count), isAlnum(u.first!), isAlnum(u.last!) else { return false }
        return u.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }
    }

    static func validDNSSubdomain(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard (1...253).contains(u.count) else { return false }
        return s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            let b = Array(label.utf8)
            return (1...63).contains(b.count) && isLowerAlnum(b.first!) && isLowerAlnum(b.last!)
                && b.allSatisfy { isLowerAlnum($0) || $0 == UInt8(ascii: "-") }
        }
    }

    private static func isAlnum(_ c: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c)
    }

    private static func isLowerAlnum(_ c: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c)
    }
}
