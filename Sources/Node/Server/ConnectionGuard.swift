import NIOCore

/// The deadline of one client connection, kept in front of the HTTP decoder so it sees the first
/// byte of a request head (the decoder only hands over complete heads). The request handler
/// tells it when a head was complete, when body bytes arrived, when the request is being served
/// and when the connection is idle again; `ClientDeadlines` closes it once its phase lasted too
/// long.
///
/// Time is counted in ticks of `ClientDeadlines` (one per second), read from the loop's state:
/// no clock read and no timer per request, which the data plane could not afford.
final class ConnectionGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    enum Phase: Equatable {
        /// Between requests (or before the first): the keep-alive timeout runs.
        case idle(since: UInt32)
        /// Bytes of a head arrived, the head is not complete: the header timeout runs.
        case head(since: UInt32)
        /// Reading the body: the body idle timeout runs from the last piece, the body timeout
        /// from the end of the head.
        case body(since: UInt32, began: UInt32)
        /// The request is with a worker or being answered: upstream timeouts govern.
        case serving
    }

    private(set) var phase: Phase
    private let loop: ClientDeadlines.LoopState
    private let limits: ClientLimits
    private var context: ChannelHandlerContext?

    init(loop: ClientDeadlines.LoopState, limits: ClientLimits) {
        self.loop = loop
        self.limits = limits
        phase = .idle(since: loop.tick)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        loop.guards[ObjectIdentifier(self)] = self
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        loop.guards[ObjectIdentifier(self)] = nil
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        loop.guards[ObjectIdentifier(self)] = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .idle = phase { phase = .head(since: loop.tick) }
        context.fireChannelRead(data)
    }

    func headReceived() { phase = .body(since: loop.tick, began: loop.tick) }
    func bodyProgress() { if case .body(_, let began) = phase { phase = .body(since: loop.tick, began: began) } }
    func serving() { phase = .serving }
    func idle() { phase = .idle(since: loop.tick) }

    /// Why this connection is over its deadline at `tick`, if it is. A phase that began during
    /// tick `t` may have begun up to a tick later than `t`, so it is cut only after a full
    /// `timeout + 1` ticks: never early, at most about a second late.
    func overdue(at tick: UInt32) -> ClientDeadlines.Refusal? {
        func over(_ since: UInt32, _ secs: Int) -> Bool { Int(tick &- since) > secs }
        switch phase {
        case .idle(let since): return over(since, limits.keepAliveTimeoutSecs) ? .idleTimeout : nil
        case .head(let since): return over(since, limits.headerReadTimeoutSecs) ? .headerTimeout : nil
        case .body(let since, let began):
            if over(began, limits.bodyTimeoutSecs) { return .bodyDeadline }
            return over(since, limits.bodyIdleTimeoutSecs) ? .bodyTimeout : nil
        case .serving: return nil
        }
    }

    func close() { context?.close(promise: nil) }
}

/// The whole life of a connection over `--max-client-connections`: a 503 in the compat error
/// shape, then close.
final class RefuseConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let error: APIError
    init(_ error: APIError = .tooManyConnections) { self.error = error }

    func channelActive(context: ChannelHandlerContext) {
        let body = error.body
        let response = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n"
            + "x-smg-error-code: \(error.code)\r\nconnection: close\r\n\r\n" + body
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: response))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
