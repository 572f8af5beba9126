import NIOCore
import NIOTLS

/// Completes `promise` with the protocol ALPN chose (nil: none) when a client connection's TLS
/// handshake has finished, or fails it with
/// why it did not (an untrusted certificate, a name that does not match, a client certificate
/// wanted, the peer gone), then leaves the pipeline. Worker and Redis connections both wait on
/// it before they are used, so a failed handshake is reported with its reason.
final class TLSHandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    /// Why a handshake did not complete.
    struct Failed: Error, CustomStringConvertible {
        let reason: String
        var description: String { reason }
    }

    private var promise: EventLoopPromise<String?>?
    /// Who is at the other end, for the message when it hangs up mid-handshake ("the worker").
    private let peer: String

    init(_ promise: EventLoopPromise<String?>, peer: String) {
        self.promise = promise
        self.peer = peer
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        context.fireUserInboundEventTriggered(event)
        if let event = event as? TLSUserEvent, case .handshakeCompleted(let negotiated) = event, let p = promise {
            promise = nil
            p.succeed(negotiated)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise?.fail(Failed(reason: String(describing: error)))
        promise = nil
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise?.fail(Failed(reason: "\(peer) closed the connection during the handshake"))
        promise = nil
        context.fireChannelInactive()
    }
}
