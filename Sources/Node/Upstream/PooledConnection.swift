import NIOCore
import NIOHTTP1

/// A keep-alive connection to one worker, owned by one event loop's pool, or one stream of an
/// HTTP/2 connection (`multiplexed`): the same HTTP/1 parts either way.
final class PooledConnection {
    let channel: any Channel
    let handler: UpstreamHandler
    let url: WorkerURL
    /// A stream of an `HTTP2Connection`: used for one call, never pooled.
    let multiplexed: Bool
    /// When it was last put back in the pool (`NIODeadline` uptime nanoseconds).
    var idleSince: UInt64 = 0
    init(channel: any Channel, handler: UpstreamHandler, url: WorkerURL, multiplexed: Bool = false) {
        self.channel = channel
        self.handler = handler
        self.url = url
        self.multiplexed = multiplexed
    }

    /// The call is given up: a keep-alive connection is closed (what it carries is unknown
    /// now); a stream is reset, unless its answer ended, when it has closed itself or is about
    /// to (resetting finished streams is what a "rapid reset" attacker does, and HTTP/2 servers,
    /// swift-nio-http2's among them, close connections that do it often).
    func abandon() {
        guard !(multiplexed && handler.answerEnded) else { return }
        channel.close(promise: nil)
    }

    /// Writes one whole request: its head, its body when it has one, its end, then flushes.
    /// Every worker call (an attempt, a prefill half, a control-path fetch) sends this way.
    func send(_ head: HTTPRequestHead, body: ByteBuffer?) {
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body, body.readableBytes > 0 { channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
    }
}
