import Foundation
import RouterHarness
import Testing

/// `--upstream-http2` on `EmbeddedRouter`, frame by frame: what the router does with a worker's
/// SETTINGS, GOAWAY and resets is one step each, with no socket and no timing.
@Suite struct EmbeddedHTTP2Tests {
    static let w1 = "http://198.18.0.1:8000"
    static let chat = #"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
    static let stream = #"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#
    static let (settings, endHeaders, endStream) = (EmbeddedRouter.h2Frame(4), UInt8(0x4), UInt8(0x1))

    static func head(_ stream: UInt32, _ contentType: String) -> [UInt8] {
        EmbeddedRouter.h2Frame(1, flags: endHeaders, stream: stream, EmbeddedRouter.h2Head(status: 0x88, contentType: contentType))
    }

    static func data(_ stream: UInt32, _ text: String, end: Bool = false) -> [UInt8] {
        EmbeddedRouter.h2Frame(0, flags: end ? endStream : 0, stream: stream, Array(text.utf8))
    }

    /// The frames in `bytes` (type, flags, stream), as many as are whole.
    static func frames(_ bytes: [UInt8]) -> [(type: UInt8, flags: UInt8, stream: UInt32)] {
        var out: [(UInt8, UInt8, UInt32)] = [], i = bytes.starts(with: Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)) ? 24 : 0
        while i + 9 <= bytes.count {
            let length = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2])
            let stream = UInt32(bytes[i + 5] & 0x7F) << 24 | UInt32(bytes[i + 6]) << 16 | UInt32(bytes[i + 7]) << 8 | UInt32(bytes[i + 8])
            out.append((bytes[i + 3], bytes[i + 4], stream))
            i += 9 + length
        }
        return out
    }

    @Test func goAwayDrainsTheConnectionAndTheNextRequestOpensAnother() throws {
        let router = try EmbeddedRouter(["--worker-urls", Self.w1, "--disable-retries"])
        router.speakHTTP2(Self.w1)
        let first = router.connect()
        first.post("/v1/chat/completions", Self.stream)
        let k = router.upstreams.count - 1
        let opening = router.sentBytes(on: k)
        #expect(String(decoding: opening.prefix(14), as: UTF8.self) == "PRI * HTTP/2.0", "the connection opens with the HTTP/2 preface")
        #expect(!Self.frames(opening).contains { $0.type == 1 }, "no request before the worker's SETTINGS")
        // The worker's SETTINGS make the connection ready: the request goes out as stream 1.
        router.answer(on: k, bytes: Self.settings)
        #expect(Self.frames(router.sentBytes(on: k)).contains { $0.type == 1 && $0.stream == 1 }, "HEADERS on stream 1")
        router.answer(on: k, bytes: Self.head(1, "text/event-stream") + Self.data(1, "data: 1\n\n"))
        // GOAWAY: stream 1 goes on; nothing new goes on this connection.
        router.answer(on: k, bytes: EmbeddedRouter.h2Frame(7, [0, 0, 0, 1, 0, 0, 0, 0]))
        let second = router.connect()
        second.post("/v1/chat/completions", Self.chat)
        #expect(router.upstreams.count == k + 2, "the second request opened a connection of its own")
        #expect(router.upstreams[k].channel.isActive, "the draining connection stays for its stream")
        router.answer(on: k, bytes: Self.data(1, "data: [DONE]\n\n", end: true))
        #expect(first.output.contains("data: 1") && first.output.contains("[DONE]"), "\(first.output)")
        #expect(!router.upstreams[k].channel.isActive, "closed once its last stream ended")
        router.answer(on: k + 1, bytes: Self.settings)
        router.answer(on: k + 1, bytes: Self.head(1, "application/json") + Self.data(1, "{}", end: true))
        #expect(second.output.hasPrefix("HTTP/1.1 200") && second.output.contains("\r\n{}\r\n"), "\(second.output)")
        #expect(router.leaks.isEmpty, "\(router.leaks)")
    }

    @Test func aStreamTheWorkerResetsFailsAloneAndTheConnectionCarriesTheNext() throws {
        let router = try EmbeddedRouter(["--worker-urls", Self.w1, "--disable-retries"])
        router.speakHTTP2(Self.w1)
        let first = router.connect()
        first.post("/v1/chat/completions", Self.chat)
        let k = router.upstreams.count - 1
        router.answer(on: k, bytes: Self.settings)
        // RST_STREAM INTERNAL_ERROR before any answer: that call fails (retries are off: 502).
        router.answer(on: k, bytes: EmbeddedRouter.h2Frame(3, stream: 1, [0, 0, 0, 2]))
        #expect(first.output.hasPrefix("HTTP/1.1 502"), "\(first.output)")
        let second = router.connect()
        second.post("/v1/chat/completions", Self.chat)
        #expect(router.upstreams.count == k + 1, "the same connection carries the next request")
        router.answer(on: k, bytes: Self.head(3, "application/json") + Self.data(3, "{}", end: true))
        #expect(second.output.hasPrefix("HTTP/1.1 200"), "\(second.output)")
        #expect(router.leaks.isEmpty, "\(router.leaks)")
    }
}
