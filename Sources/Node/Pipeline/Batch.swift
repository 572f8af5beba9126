/// How many requests one inference body stands for, and the bound on it.
///
/// A body can ask for many answers at once: `n` or `best_of` choices, `sampling_params.n` on
/// `/generate`, a list of generate `text`s or `input_ids` lists, a list of completion prompts.
/// Each costs a worker a whole request, and in PD mode the router a bootstrap room each, so one
/// unbounded number would let one client make the router allocate without limit. Every such
/// count is therefore bounded (`--max-batch-size`) and refused above it before planning; lists
/// are counted no further than the bound, so a list of millions costs no more than one of 129.
enum Batch {
    struct TooLarge: Equatable {
        var field: String
        /// What was asked for; a list is counted up to the bound plus one ("at least").
        var count: String
    }

    enum Measure: Equatable {
        /// nil for one request; otherwise the batch size PD mode gives a bootstrap room each.
        case size(Int?)
        case tooLarge(TooLarge)
    }

    static func measure(_ kind: Route.Inference, members: [JSONScanner.Member], bytes: UnsafeRawBufferPointer, limit: Int) -> Measure {
        var size: Int?
        for m in members {
            let isN = m.keyEquals("n", in: bytes)
            if isN || m.keyEquals("best_of", in: bytes) {
                guard let n = number(m.value, bytes) else { continue }
                if n > Double(limit) { return .tooLarge(TooLarge(field: key(m, bytes), count: text(m.value, bytes))) }
                // A chat completion's choices are a batch in PD mode (a room each), as the reference counts them.
                if kind == .chat, isN, n > 1 { size = Int(n) }
            } else if kind == .generate, m.keyEquals("sampling_params", in: bytes), m.kind == .object {
                var tooMany: TooLarge?
                JSONScanner.forEachMember(bytes, object: m.value) { k, v in
                    let isN = JSONScanner.keyMatches(bytes, k, "n")
                        || (bytes[k].contains(UInt8(ascii: "\\")) && JSONScanner.decodeEscaped(UnsafeRawBufferPointer(rebasing: bytes[k])) == "n")
                    if isN, let n = number(v, bytes), n > Double(limit) {
                        tooMany = TooLarge(field: "sampling_params.n", count: text(v, bytes))
                    }
                }
                if let tooMany { return .tooLarge(tooMany) }
            } else if let listOfRequests = listField(kind, m, bytes) {
                let n = JSONScanner.countElements(bytes, array: m.value, upTo: limit)
                if n > limit { return .tooLarge(TooLarge(field: listOfRequests, count: "more than \(limit)")) }
                if n > 0 { size = n }
            }
        }
        return .size(size)
    }

    /// The name of a member that is a list of requests for this route, nil when `m` is not one:
    /// generate's `text` list, generate's `input_ids` as a list of lists, a completion `prompt`
    /// as a list of strings or of token lists (a flat list of token ids is one prompt).
    private static func listField(_ kind: Route.Inference, _ m: JSONScanner.Member, _ bytes: UnsafeRawBufferPointer) -> String? {
        guard m.kind == .array else { return nil }
        switch kind {
        case .generate where m.keyEquals("text", in: bytes): return "text"
        case .generate where m.keyEquals("input_ids", in: bytes): return elementsAreRequests(m, bytes) ? "input_ids" : nil
        case .completions where m.keyEquals("prompt", in: bytes): return elementsAreRequests(m, bytes) ? "prompt" : nil
        default: return nil
        }
    }

    /// The first element tells a list of requests (strings or lists) from one prompt's token ids.
    private static func elementsAreRequests(_ m: JSONScanner.Member, _ bytes: UnsafeRawBufferPointer) -> Bool {
        let first = bytes[(m.value.lowerBound + 1)..<m.value.upperBound].first { !JSONScanner.isWhitespace($0) }
        return first == UInt8(ascii: "[") || first == UInt8(ascii: "\"")
    }

    /// A JSON number's value (integers beyond Int64 and exponents included); nil for any other kind.
    private static func number(_ range: Range<Int>, _ bytes: UnsafeRawBufferPointer) -> Double? {
        guard let c = range.first.map({ bytes[$0] }), c == UInt8(ascii: "-") || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) else { return nil }
        return Double(text(range, bytes))
    }

    private static func text(_ range: Range<Int>, _ bytes: UnsafeRawBufferPointer) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range.prefix(40)]), as: UTF8.self)
    }

    private static func key(_ m: JSONScanner.Member, _ bytes: UnsafeRawBufferPointer) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[m.key]), as: UTF8.self)
    }
}
