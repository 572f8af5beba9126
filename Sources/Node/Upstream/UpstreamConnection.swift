import NIOCore
import NIOHTTP1

/// Receives one upstream response, part by part, on the event loop that owns both channels.
protocol UpstreamResponseDelegate: AnyObject {
    func upstreamHead(_ head: HTTPResponseHead)
    func upstreamBody(_ buffer: ByteBuffer)
    /// The upstream socket has no more data for now: the moment to flush to the client.
    func upstreamReadComplete()
    func upstreamEnd(reusable: Bool)
    /// The connection failed or closed before the response ended.
    func upstreamFailed(_ error: any Error)
}

enum UpstreamError: Error, CustomStringConvertible {
    case closedBeforeResponse
    case closedMidResponse
    case timedOut
    /// An `https://` worker in a router started without TLS contexts (never in `smg`).
    case tlsUnavailable
    /// The TLS handshake failed: the certificate did not verify, or the worker wants a client
    /// certificate, or it does not speak TLS.
    case tlsHandshake(String)
    var description: String {
        switch self {
        case .tlsUnavailable: return "TLS to workers is not configured in this router"
        case .tlsHandshake(let why): return "TLS handshake failed: \(why)"
        case .closedBeforeResponse: return "worker closed the connection before answering"
        case .closedMidResponse: return "worker closed the connection mid-response"
        case .timedOut: return "worker timed out"
        }
    }
}

/// The last handler of a pooled upstream channel: hands response parts to whichever exchange
/// currently owns the connection. An idle connection has no delegate; anything it receives then
/// (or its closing) makes the pool drop it.
final class UpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    /// Strong (a weak reference would give every exchange a side table and slow its retains):
    /// cleared whenever the response ends, the connection closes or the exchange lets it go.
    var delegate: (any UpstreamResponseDelegate)?
    /// Called when the channel closes, so the pool forgets it.
    var onClose: (() -> Void)?
    private var responseKeepAlive = true
    private var inResponse = false
    /// True once this connection has carried a complete exchange (it came from the pool).
    var reused = false
    /// The last answer's end arrived (a stream whose answer ended needs no reset).
    private(set) var answerEnded = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        guard let delegate else {
            // Data on an idle connection: the server is confused; drop the connection.
            context.close(promise: nil)
            return
        }
        switch part {
        case .head(let head):
            inResponse = true
            answerEnded = false
            responseKeepAlive = head.isKeepAlive
            delegate.upstreamHead(head)
        case .body(let buffer):
            delegate.upstreamBody(buffer)
        case .end:
            inResponse = false
            answerEnded = true
            self.delegate = nil
            reused = true
            delegate.upstreamEnd(reusable: responseKeepAlive)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        delegate?.upstreamReadComplete()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let delegate {
            self.delegate = nil
            delegate.upstreamFailed(inResponse ? UpstreamError.closedMidResponse : UpstreamError.closedBeforeResponse)
        }
        onClose?()
        onClose = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
