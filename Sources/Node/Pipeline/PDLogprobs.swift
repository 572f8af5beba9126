import NIOCore

/// PD with `return_logprob`: the prefill worker computed the prompt's logprobs, the decode worker
/// only its own, so the client would lose the prompt's. As the reference gateway does, the
/// prefill's `meta_info.input_token_logprobs` are put in front of the decode's: in the one JSON
/// answer, or in every event of a stream (each carries the cumulative `meta_info`). A batch
/// answer (a JSON array) is merged element by element.
///
/// Pure: bytes in, bytes out. The decode answer is held until the prefill's lists are known
/// (the prefill answers first in practice: the decode worker waits for its KV cache).
struct PDLogprobs {
    /// The prefill's lists, one per batch element; nil while unknown; empty when the prefill gave
    /// none (the decode answer then goes out unchanged).
    private(set) var prefill: [[JSONValue]]?
    private var pending: [UInt8] = []
    /// How much of `pending` is known to hold no event end (each byte is looked at once).
    private var scanned = 0
    let stream: Bool

    /// The most of a decode answer held for merging (a whole answer, or what waits for the
    /// prefill's lists or an event's end): a worker that sends more gets the request a 502.
    static let maxHeldBytes = 64 << 20

    init(stream: Bool) { self.stream = stream }

    var prefillKnown: Bool { prefill != nil }

    /// The prefill's lists from its whole answer: a JSON object or array, or an SSE stream (the
    /// first event that carries them).
    static func inputLogprobs(fromPrefillAnswer bytes: [UInt8]) -> [[JSONValue]] {
        func lists(_ v: JSONValue) -> [[JSONValue]]? {
            if let a = v.array { return a.compactMap { $0["meta_info"]?["input_token_logprobs"]?.array } }
            return v["meta_info"]?["input_token_logprobs"]?.array.map { [$0] }
        }
        if let whole = JSONValue.parse(bytes) { return lists(whole) ?? [] }
        for event in Self.events(bytes) {
            if let v = JSONValue.parse(event.utf8), let l = lists(v), !l.isEmpty { return l }
        }
        return []
    }

    /// The `data:` payloads of the complete events in `bytes`.
    private static func events(_ bytes: [UInt8]) -> [String] {
        String(decoding: bytes, as: UTF8.self).components(separatedBy: "\n\n").compactMap { e in
            e.hasPrefix("data: ") ? String(e.dropFirst(6)) : nil
        }
    }

    /// The prefill's lists are known: what was held can go out (for a stream).
    mutating func prefillAnswered(_ lists: [[JSONValue]]) -> [UInt8] {
        prefill = lists
        return stream ? drainEvents() : []
    }

    /// Part of the decode answer: what can go out now (nothing for a whole JSON answer, which
    /// goes out at the end; complete events for a stream once the prefill's lists are known).
    /// nil when more than `maxHeldBytes` would be held.
    mutating func decodePart(_ buffer: ByteBuffer) -> [UInt8]? {
        pending += buffer.readableBytesView
        let out = stream && prefillKnown ? drainEvents() : []
        return pending.count > Self.maxHeldBytes ? nil : out
    }

    /// The end of the decode answer: the rest, merged.
    mutating func decodeEnded() -> [UInt8] {
        guard stream else {
            defer { pending = [] }
            guard let prefill, !prefill.isEmpty, let answer = JSONValue.parse(pending) else { return pending }
            return Array(Self.merged(answer, prefill).render().utf8)
        }
        var out = drainEvents()
        out += pending
        pending = []
        return out
    }

    /// Complete events merged; an incomplete last one stays pending.
    private mutating func drainEvents() -> [UInt8] {
        guard let cut = lastEventEnd() else { return [] }
        let complete = Array(pending[..<cut])
        pending.removeSubrange(..<cut)
        scanned = pending.count
        guard let prefill, !prefill.isEmpty else { return complete }
        var out = ""
        for event in String(decoding: complete, as: UTF8.self).components(separatedBy: "\n\n") where !event.isEmpty {
            if event.hasPrefix("data: "), let v = JSONValue.parse(event.dropFirst(6).utf8) {
                out += "data: " + Self.merged(v, prefill).render() + "\n\n"
            } else {
                out += event + "\n\n"
            }
        }
        return Array(out.utf8)
    }

    /// The end of the last complete event, looking only at bytes not looked at before.
    private mutating func lastEventEnd() -> Int? {
        var cut: Int?
        var i = max(scanned - 1, 0)
        while i + 1 < pending.count {
            if pending[i] == UInt8(ascii: "\n"), pending[i + 1] == UInt8(ascii: "\n") { cut = i + 2 }
            i += 1
        }
        scanned = pending.count
        return cut
    }

    /// `answer` with `prefill[k]` in front of element k's `meta_info.input_token_logprobs`.
    static func merged(_ answer: JSONValue, _ prefill: [[JSONValue]]) -> JSONValue {
        func merge(_ v: JSONValue, _ lists: [JSONValue]) -> JSONValue {
            guard var o = v.object, var meta = o["meta_info"]?.object else { return v }
            meta["input_token_logprobs"] = .array(lists + (meta["input_token_logprobs"]?.array ?? []))
            o["meta_info"] = .object(meta)
            return .object(o)
        }
        if let a = answer.array {
            return .array(a.enumerated().map { k, v in k < prefill.count ? merge(v, prefill[k]) : v })
        }
        return merge(answer, prefill[0])
    }
}
