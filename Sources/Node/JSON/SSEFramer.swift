/// Server-sent events as a worker streams them (the WHATWG `text/event-stream` format), framed
/// once for every stream the router reads: PD's logprob merge and the Responses translation.
///
/// A line ends in LF, CRLF or CR (a CR that ends one read waits for the next, which may bring
/// its LF); an empty line ends an event. `data` lines (the value after the colon, less one
/// space) make the event's data, joined by LF; comments and other fields stay in the event's
/// bytes and add no data. Pure: bytes in, events out; each byte is looked at once.
struct SSEFramer {
    /// One event: its bytes as received, through the empty line that ended it, and its data
    /// (nil when it had no `data` line).
    struct Event: Equatable {
        var bytes: [UInt8]
        var data: [UInt8]?
        /// Every line was a `data` line: rewriting the data loses nothing else.
        var onlyData: Bool
    }

    /// The most one event may take before it ends; more is a broken stream (`overflowed`).
    let maxEventBytes: Int
    private var pending: [UInt8] = []
    /// Where the current event and line start in `pending`, and how far it was looked at.
    private var eventStart = 0
    private var lineStart = 0
    private var scanned = 0
    private var data: [UInt8]?
    private var onlyData = true
    /// An event went past `maxEventBytes`: nothing more is framed.
    private(set) var overflowed = false

    init(maxEventBytes: Int) { self.maxEventBytes = maxEventBytes }

    /// Bytes held for an event not yet ended.
    var heldBytes: Int { pending.count - eventStart }

    /// The events `bytes` complete.
    mutating func feed(_ bytes: some Collection<UInt8>) -> [Event] {
        guard !overflowed else { return [] }
        pending.append(contentsOf: bytes)
        var events: [Event] = []
        while scanned < pending.count {
            let b = pending[scanned]
            guard b == UInt8(ascii: "\n") || b == UInt8(ascii: "\r") else {
                scanned += 1
                continue
            }
            var end = scanned + 1
            if b == UInt8(ascii: "\r") {
                guard end < pending.count else { break }  // its LF may come with the next read
                if pending[end] == UInt8(ascii: "\n") { end += 1 }
            }
            if let event = line(pending[lineStart..<scanned], endingAt: end) { events.append(event) }
            scanned = end
            lineStart = end
        }
        // What was handed out goes; what is held stays, within its bound.
        if eventStart > 0 {
            pending.removeFirst(eventStart)
            scanned -= eventStart
            lineStart -= eventStart
            eventStart = 0
        }
        if pending.count > maxEventBytes { overflowed = true }
        return events
    }

    /// The stream ended: an event it left unended (no empty line after it), if any.
    mutating func finish() -> Event? {
        guard !overflowed, heldBytes > 0 else { return nil }
        defer { pending = []; eventStart = 0; lineStart = 0; scanned = 0; data = nil; onlyData = true }
        // The last line ends with the stream (a CR left waiting for its LF ends it too); an
        // empty one ends the event as it would have.
        if lineStart < pending.count {
            var text = pending[lineStart...]
            if text.last == UInt8(ascii: "\r") { text = text.dropLast() }
            if let ended = line(text, endingAt: pending.count) { return ended }
        }
        return Event(bytes: Array(pending[eventStart...]), data: data, onlyData: onlyData)
    }

    /// One line (without its end); the event it ends, if it is empty.
    private mutating func line(_ text: ArraySlice<UInt8>, endingAt end: Int) -> Event? {
        if text.isEmpty {
            let event = Event(bytes: Array(pending[eventStart..<end]), data: data, onlyData: onlyData)
            eventStart = end
            data = nil
            onlyData = true
            return event
        }
        let colon = text.firstIndex(of: UInt8(ascii: ":")) ?? text.endIndex
        guard text[text.startIndex..<colon].elementsEqual("data".utf8) else {
            onlyData = false
            return nil
        }
        var value = text[colon...].dropFirst()
        if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
        if data == nil { data = Array(value) } else { data!.append(UInt8(ascii: "\n")); data!.append(contentsOf: value) }
        return nil
    }
}
