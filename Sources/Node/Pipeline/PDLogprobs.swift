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
    /// A whole JSON answer, held to its end.
    private var whole: [UInt8] = []
    /// A stream's events, framed as every stream the router reads is, and those held until the
    /// prefill's lists are known.
    private var framer = SSEFramer(maxEventBytes: maxHeldBytes)
    private var held: [SSEFramer.Event] = []
    private var heldBytes = 0
    /// The prefill's answer as it comes, kept (up to `maxHeldBytes`) until it ends, and the lists
    /// read from it once it ended with a 2xx.
    private var prefillAnswer: [UInt8] = []
    private var prefillLists: [[JSONValue]] = []
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
        var framer = SSEFramer(maxEventBytes: maxHeldBytes)
        for event in framer.feed(bytes) + [framer.finish()].compactMap({ $0 }) {
            if let data = event.data, let v = JSONValue.parse(data), let l = lists(v), !l.isEmpty { return l }
        }
        return []
    }

    /// Part of the prefill's answer.
    mutating func prefillPart(_ buffer: ByteBuffer) {
        guard prefillAnswer.count + buffer.readableBytes <= Self.maxHeldBytes else { return }
        prefillAnswer += buffer.readableBytesView
    }

    /// The prefill's answer ended: its lists are read when it was a success (`ok`: a 2xx).
    mutating func prefillAnswerEnded(ok: Bool) {
        if ok { prefillLists = Self.inputLogprobs(fromPrefillAnswer: prefillAnswer) }
        prefillAnswer = []
    }

    /// The prefill half is over (answered or not): its lists, if its answer gave any, are what
    /// the decode answer is merged with; what was held can go out (for a stream).
    mutating func prefillHalfEnded() -> [UInt8] {
        defer { prefillLists = [] }
        return prefillAnswered(prefillLists)
    }

    /// The prefill's lists are known: what was held can go out (for a stream).
    mutating func prefillAnswered(_ lists: [[JSONValue]]) -> [UInt8] {
        prefill = lists
        guard stream else { return [] }
        defer { held = []; heldBytes = 0 }
        return merged(held)
    }

    /// Part of the decode answer: what can go out now (nothing for a whole JSON answer, which
    /// goes out at the end; complete events for a stream once the prefill's lists are known).
    /// nil when more than `maxHeldBytes` would be held.
    mutating func decodePart(_ buffer: ByteBuffer) -> [UInt8]? {
        guard stream else {
            whole += buffer.readableBytesView
            return whole.count > Self.maxHeldBytes ? nil : []
        }
        let events = framer.feed(buffer.readableBytesView)
        guard prefillKnown else {
            held += events
            heldBytes += events.reduce(0) { $0 + $1.bytes.count }
            return framer.overflowed || heldBytes + framer.heldBytes > Self.maxHeldBytes ? nil : []
        }
        return framer.overflowed ? nil : merged(events)
    }

    /// The end of the decode answer: the rest, merged.
    mutating func decodeEnded() -> [UInt8] {
        guard stream else {
            defer { whole = [] }
            guard let prefill, !prefill.isEmpty, let answer = JSONValue.parse(whole) else { return whole }
            return Array(Self.merged(answer, prefill).render().utf8)
        }
        defer { held = []; heldBytes = 0 }
        return merged(held + [framer.finish()].compactMap { $0 })
    }

    /// Events with the prefill's lists merged into their data; an event with other fields, or
    /// whose data is not JSON, goes out as it came.
    private func merged(_ events: [SSEFramer.Event]) -> [UInt8] {
        var out: [UInt8] = []
        for event in events {
            guard let prefill, !prefill.isEmpty, event.onlyData, let data = event.data, let v = JSONValue.parse(data) else {
                out += event.bytes
                continue
            }
            out += Array("data: ".utf8) + Array(Self.merged(v, prefill).render().utf8) + Array("\n\n".utf8)
        }
        return out
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
