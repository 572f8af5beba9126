@testable import Node
import Testing

/// The one framer of every worker stream the router reads: events as the event-stream format
/// defines them, whatever the line ends and wherever the reads end.
@Suite struct SSEFramerTests {
    static func frame(_ text: String, readsOf n: Int = .max, max: Int = 1 << 20) -> (events: [SSEFramer.Event], last: SSEFramer.Event?) {
        var framer = SSEFramer(maxEventBytes: max)
        let bytes = Array(text.utf8)
        var events: [SSEFramer.Event] = []
        var i = 0
        while i < bytes.count {
            events += framer.feed(bytes[i..<min(i + n, bytes.count)])
            i += n
        }
        return (events, framer.finish())
    }

    static func data(_ events: [SSEFramer.Event]) -> [String?] { events.map { $0.data.map { String(decoding: $0, as: UTF8.self) } } }

    @Test func everyLineEndAndEveryReadSizeGiveTheSameEvents() {
        for end in ["\n", "\r\n", "\r"] {
            let text = ["data: {\"a\":1}", "", ": a comment", "data:x", "data:  two spaces", "", "event: e", "data", "", "data: [DONE]", "", ""]
                .joined(separator: end)
            // A CR that ends the input might still have had an LF coming: the last event then
            // comes out at the end.
            func all(_ f: (events: [SSEFramer.Event], last: SSEFramer.Event?)) -> [SSEFramer.Event] { f.events + [f.last].compactMap { $0 } }
            let whole = all(Self.frame(text))
            #expect(Self.data(whole) == ["{\"a\":1}", "x\n two spaces", "", "[DONE]"], "\(end.debugDescription)")
            #expect(whole.map(\.onlyData) == [true, false, false, true])
            #expect(whole.flatMap(\.bytes) == Array(text.utf8), "every byte, in order")
            for n in [1, 2, 3, 7] {
                #expect(all(Self.frame(text, readsOf: n)) == whole, "\(end.debugDescription) in reads of \(n)")
            }
        }
        #expect(Self.data(Self.frame("\n\ndata: a\n\n").events) == [nil, nil, "a"], "empty lines alone are events without data")
    }

    /// A CR that ends one read is not yet a line end: the next read may bring its LF.
    @Test func aCRAtTheEndOfAReadWaitsForTheNext() {
        var framer = SSEFramer(maxEventBytes: 1 << 10)
        #expect(framer.feed(Array("data: a\r\n\r".utf8)).isEmpty)
        let events = framer.feed(Array("\n".utf8))
        #expect(Self.data(events) == ["a"] && events[0].bytes == Array("data: a\r\n\r\n".utf8))
    }

    @Test func anUnendedLastEventComesOutAtTheEnd() {
        let (events, last) = Self.frame("data: 1\n\ndata: 2\ndata: 3")
        #expect(Self.data(events) == ["1"])
        #expect(last.map { String(decoding: $0.data ?? [], as: UTF8.self) } == "2\n3" && last?.bytes == Array("data: 2\ndata: 3".utf8))
        #expect(Self.frame("").last == nil && Self.frame("data: 1\n\n").last == nil)
    }

    /// An event past the bound stops the framing, however its bytes arrive; events before it
    /// were handed out, and the held bytes never grow past the bound plus one read.
    @Test func anEventPastTheBoundOverflows() {
        var framer = SSEFramer(maxEventBytes: 100)
        #expect(Self.data(framer.feed(Array("data: ok\n\n".utf8))) == ["ok"])
        var fed = 0
        while !framer.overflowed, fed < 10_000 {
            #expect(framer.feed(Array(repeating: UInt8(ascii: "a"), count: 16)).isEmpty)
            fed += 16
        }
        #expect(framer.overflowed && fed <= 116 && framer.heldBytes <= 116)
        #expect(framer.feed(Array("\n\n".utf8)).isEmpty && framer.finish() == nil, "nothing after an overflow")
    }
}
