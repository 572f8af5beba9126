import NIOCore
import NIOHTTP1
import NIOHTTP2

/// How a broken or hostile worker answers inference requests (`--misbehave MODE`): the router
/// must cost the request at most an error within `--request-timeout-secs`, never its own memory
/// or event loop. Health checks and every other route answer normally, so the worker looks
/// healthy and keeps being chosen.
public enum SimMisbehavior: String, CaseIterable, Sendable {
    /// Bytes that are not HTTP; the connection then stays open.
    case garbage
    /// A 200 whose body is one line that never ends (no newline, no end), written as fast as
    /// the router reads: a JSON answer that never closes, or an SSE event that never completes.
    case endlessLine = "endless-line"
    /// A 200 with a complete, valid answer of 64 MiB of generated text (JSON with its
    /// content-length, or one SSE event and `[DONE]`).
    case hugeBody = "huge-body"
    /// A 200 that announces a content-length of 1,000,000 bytes, sends 100 and stays open.
    case wrongLength = "wrong-length"
    /// A 200 whose body arrives one byte every 100 ms, for ever.
    case trickle
    /// A 200 that sends half of its first event (or of its JSON answer), pauses for `--ttft-ms`
    /// (2 s when 0), then sends the rest and ends: a silence in the middle of an event.
    case pauseMidEvent = "pause-mid-event"

    /// The generated text of `hugeBody`.
    static let hugeBytes = 64 << 20
    static let chunk = 64 << 10
}

extension SimWorkerHandler {
    func misbehave(_ mode: SimMisbehavior, _ context: ChannelHandlerContext, _ head: HTTPRequestHead, stream: Bool) {
        let loop = context.eventLoop.assumeIsolated()
        var h = HTTPHeaders()
        h.add(name: "x-sim-worker", value: state.options.workerName)
        h.add(name: "content-type", value: stream ? "text/event-stream" : "application/json")
        let jsonStart = #"{"id":"sim-misbehaving","object":"chat.completion","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":""#
        let eventStart = #"data: {"id":"sim-misbehaving","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":""#
        switch mode {
        case .garbage:
            // Below the HTTP encoder: raw bytes on the socket. On an HTTP/2 stream, below the
            // connection's HTTP/2 handler: a frame header no parser takes (16 MiB long), so the
            // whole connection is garbage from there on.
            if let encoder = try? context.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self) {
                encoder.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: "\u{0}\u{1}this is not HTTP\r\n\u{7f}\r\n\r\n")), promise: nil)
            } else if let connection = context.channel.parent {
                let garbage = context.channel.allocator.buffer(bytes: [0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 1] + Array("this is not HTTP/2".utf8))
                connection.eventLoop.execute {
                    guard let http2 = try? connection.pipeline.syncOperations.context(handlerType: NIOHTTP2Handler.self) else { return }
                    http2.writeAndFlush(NIOAny(garbage), promise: nil)
                }
            }
        case .endlessLine:
            sendHead(context, head, h)
            write(context, stream ? eventStart : jsonStart)
            pump(context, remaining: nil)
        case .hugeBody:
            let opening = stream ? eventStart : jsonStart
            let closing = stream ? "\"}}]}\n\ndata: [DONE]\n\n" : "\"}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}"
            if !stream { h.add(name: "content-length", value: String(opening.utf8.count + SimMisbehavior.hugeBytes + closing.utf8.count)) }
            sendHead(context, head, h)
            write(context, opening)
            pump(context, remaining: SimMisbehavior.hugeBytes) { [self] in
                write(context, closing)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        case .wrongLength:
            h.add(name: "content-length", value: "1000000")
            sendHead(context, head, h)
            write(context, String(jsonStart.prefix(100)))
        case .trickle:
            sendHead(context, head, h)
            let text = Array((stream ? eventStart : jsonStart).utf8)
            func drip(_ i: Int) {
                guard active else { return }
                context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: [text[i % text.count]])))), promise: nil)
                loop.scheduleTask(in: .milliseconds(100)) { drip(i + 1) }
            }
            drip(0)
        case .pauseMidEvent:
            sendHead(context, head, h)
            write(context, stream ? eventStart : jsonStart)
            let pause = state.options.timeToFirstTokenMs > 0 ? state.options.timeToFirstTokenMs : 2000
            loop.scheduleTask(in: .milliseconds(Int64(pause))) { [self] in
                guard active else { return }
                write(context, stream ? "after a pause\"}}]}\n\ndata: [DONE]\n\n" : "after a pause\"}}]}")
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }

    private func sendHead(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, _ headers: HTTPHeaders) {
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
    }

    /// Writes 64 KiB of text at a time, the next once the last was taken by the socket (so the
    /// reader's pace sets the writer's), `remaining` bytes in all or for ever; then `done`.
    private func pump(_ context: ChannelHandlerContext, remaining: Int?, then done: (() -> Void)? = nil) {
        guard active else { return }
        if let remaining, remaining <= 0 { done?(); return }
        let n = min(remaining ?? SimMisbehavior.chunk, SimMisbehavior.chunk)
        let loop = context.eventLoop
        let written = context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(repeating: UInt8(ascii: "a"), count: n)))))
        written.assumeIsolated().whenSuccess { [self] in
            // A fresh turn of the loop: a socket that takes every write at once would otherwise
            // recurse once per chunk.
            loop.assumeIsolated().execute { self.pump(context, remaining: remaining.map { $0 - n }, then: done) }
        }
    }
}
