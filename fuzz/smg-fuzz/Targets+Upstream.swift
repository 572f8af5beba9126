#if DEBUG || FUZZING
import NIOCore
import RouterHarness

/// What workers' connections deliver, through the whole exchange (`EmbeddedRouter`): a client
/// sends one request (or two, pipelined) and the input scripts the workers the router calls:
/// bytes on a connection (raw, or pieces of real answers: heads, chunked streams, error
/// statuses, a `/generate` answer with prompt logprobs), a connection closed, time passing
/// (deadlines and backoffs fire), the client leaving. Regular and PD exchanges, streamed or not,
/// with PD's logprob merge, with retries and breakers.
///
/// With mode bit 0x10 the workers speak HTTP/2 (`--upstream-http2`): each connection is the
/// router's HTTP/2 client and what the input writes are frames (whole ones from the pieces
/// below, or raw bytes), on streams 1 to 7: SETTINGS, HEADERS, DATA, RST_STREAM, GOAWAY, PING.
///
/// A finding is a crash (a precondition of the exchange machine: an event a worker made the
/// shell send out of order) or a leak once the client and every worker are gone: a request, an
/// admission slot or a worker's in-flight count not given back.
extension FuzzTarget {
    static let upstreamArguments: [[String]] = [false, true].map { pd in
        let common = ["--retry-max-retries", "2", "--retry-initial-backoff-ms", "10", "--retry-jitter-factor", "0",
                      "--request-timeout-secs", "30", "--cb-failure-threshold", "3", "--policy", "round_robin"]
        return common + (pd ? ["--pd-disaggregation", "--prefill", "http://198.18.0.1:8000", "9000", "--prefill", "http://198.18.0.2:8000", "9000",
                               "--decode", "http://198.18.0.3:8000", "--decode", "http://198.18.0.4:8000"]
                            : ["--worker-urls", "http://198.18.0.1:8000", "http://198.18.0.2:8000"])
    }

    /// Pieces of real worker answers, so the fuzzer starts from the shapes workers send.
    static let answerPieces: [String] = [
        EmbeddedRouter.answer("{}"),
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        "1e\r\ndata: {\"meta_info\":{\"id\":1}}\n\n\r\n",
        "e\r\ndata: [DONE]\n\n\r\n",
        "0\r\n\r\n",
        EmbeddedRouter.answer(status: 503, ""),
        EmbeddedRouter.answer(status: 500, "", headers: ["connection: close"]),
        EmbeddedRouter.answer(#"{"text":"x","meta_info":{"input_token_logprobs":[[-0.5,1,null]],"id":"a"}}"#),
        EmbeddedRouter.answer(status: 400, #"{"e":"bad"}"#),
        "HTTP/1.1 100 Continue\r\n\r\n",
    ]

    /// Pieces of what an HTTP/2 worker sends, on stream `stream` where they have one.
    static func h2Pieces(stream s: UInt32) -> [[UInt8]] {
        let (endHeaders, endStream) = (UInt8(0x4), UInt8(0x1))
        return [
            EmbeddedRouter.h2Frame(4),                                    // SETTINGS
            EmbeddedRouter.h2Frame(4, flags: 1),                          // SETTINGS ack
            EmbeddedRouter.h2Frame(4, [0, 3, 0, 0, 0, 1]),                // SETTINGS: one stream at a time
            EmbeddedRouter.h2Frame(1, flags: endHeaders, stream: s, EmbeddedRouter.h2Head(status: 0x88, contentType: "application/json")),
            EmbeddedRouter.h2Frame(1, flags: endHeaders, stream: s, EmbeddedRouter.h2Head(status: 0x88, contentType: "text/event-stream")),
            EmbeddedRouter.h2Frame(1, flags: endHeaders | endStream, stream: s, EmbeddedRouter.h2Head(status: 0x8E, contentType: "application/json")),
            EmbeddedRouter.h2Frame(0, flags: endStream, stream: s, Array("{}".utf8)),
            EmbeddedRouter.h2Frame(0, stream: s, Array("data: {\"meta_info\":{\"id\":1}}\n\n".utf8)),
            EmbeddedRouter.h2Frame(0, flags: endStream, stream: s, Array("data: [DONE]\n\n".utf8)),
            EmbeddedRouter.h2Frame(3, stream: s, [0, 0, 0, 7]),           // RST_STREAM REFUSED_STREAM
            EmbeddedRouter.h2Frame(7, [0, 0, 0, 1, 0, 0, 0, 0]),          // GOAWAY, last stream 1, no error
            EmbeddedRouter.h2Frame(6, [1, 2, 3, 4, 5, 6, 7, 8]),          // PING
            EmbeddedRouter.h2Frame(8, [0, 0, 0x10, 0]),                   // WINDOW_UPDATE on the connection
        ]
    }

    static func upstream(_ bytes: [UInt8]) {
        guard let mode = bytes.first else { return }
        let pd = mode & 1 == 1, stream = mode & 2 != 0, logprobs = mode & 4 != 0, pipelined = mode & 8 != 0, http2 = mode & 0x10 != 0
        // A fresh router per input: no run inherits another's breakers or pooled connections.
        let router = try! EmbeddedRouter(upstreamArguments[pd ? 1 : 0])
        if http2 { for k in 1...4 { router.speakHTTP2("http://198.18.0.\(k):8000") } }
        let client = router.connect()
        let body = pd ? #"{"text":"hello","stream":\#(stream),"return_logprob":\#(logprobs)}"#
                      : #"{"model":"m","messages":[{"role":"user","content":"hello"}],"stream":\#(stream)}"#
        let path = pd ? "/generate" : "/v1/chat/completions"
        let request = "POST \(path) HTTP/1.1\r\nhost: r\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)"
        client.send(pipelined ? request + request : request)

        var i = 1
        func next() -> UInt8? {
            guard i < bytes.count else { return nil }
            defer { i += 1 }
            return bytes[i]
        }
        while let op = next() {
            let open = router.upstreams.indices.filter { router.upstreams[$0].channel.isActive }
            let target = open.isEmpty ? nil : open[Int(op >> 3) % open.count]
            switch op & 7 {
            case 0, 1:  // raw bytes
                let count = Int(next() ?? 0) % 64
                var raw: [UInt8] = []
                for _ in 0..<count { if let b = next() { raw.append(b) } }
                if let target { router.answer(on: target, bytes: raw) }
            case 2, 3:  // a piece of a real answer
                let pick = Int(next() ?? 0)
                if let target, http2 {
                    let pieces = h2Pieces(stream: UInt32(1 + 2 * (pick >> 4 & 3)))
                    router.answer(on: target, bytes: pieces[(pick & 0xF) % pieces.count])
                } else if let target {
                    router.answer(on: target, answerPieces[pick % answerPieces.count])
                }
            case 4:  // the worker closes the connection
                if let target { router.closeUpstream(target) }
            case 5:  // time passes: up to past the request deadline
                let step = Int64(next() ?? 0)
                router.advance(by: .milliseconds([1, 10, 100, 1000, 10_000, 40_000][Int(step % 6)] * (1 + step / 6 % 4)))
            case 6:  // the client leaves
                if client.isOpen { client.close() }
            default:  // what the router wrote is read (and dropped), as a socket would take it
                _ = client.output
                for k in open { _ = router.sent(on: k) }
            }
        }
        if verbose { print(client.output, terminator: "") }
        // Every worker goes away and time runs out: retries that open new connections meet
        // closed ones too, until nothing is left.
        var rounds = 0
        repeat {
            for k in router.upstreams.indices where router.upstreams[k].channel.isActive { router.closeUpstream(k) }
            router.advance(by: .seconds(60))
            rounds += 1
        } while router.upstreams.contains(where: \.channel.isActive) && rounds < 20
        check(!router.upstreams.contains(where: \.channel.isActive), "the router stops opening connections once every worker fails")
        if client.isOpen { client.close() }
        check(router.leaks.isEmpty, "everything begun is ended: \(router.leaks)")
    }
}
#endif
