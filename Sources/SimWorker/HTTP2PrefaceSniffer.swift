import NIOCore

/// Tells a connection's protocol from its first bytes: the HTTP/2 client preface
/// (`PRI * HTTP/2.0…`, which a client sends first with prior knowledge, and after TLS when ALPN
/// chose h2) or anything else, taken as HTTP/1.1. Adds that protocol's handlers behind itself,
/// hands them what it read, and leaves.
final class HTTP2PrefaceSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    private var seen: ByteBuffer?
    private let http1: (any Channel) throws -> Void
    private let http2: (any Channel) throws -> Void

    init(http1: @escaping (any Channel) throws -> Void, http2: @escaping (any Channel) throws -> Void) {
        self.http1 = http1
        self.http2 = http2
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        if seen == nil { seen = chunk } else { seen!.writeBuffer(&chunk) }
        let bytes = seen!.readableBytesView
        let n = min(bytes.count, Self.preface.count)
        let looksHTTP2 = bytes.prefix(n).elementsEqual(Self.preface.prefix(n))
        // A prefix of the preface: wait for the rest before deciding.
        if looksHTTP2, n < Self.preface.count { return }
        do {
            try (looksHTTP2 ? http2 : http1)(context.channel)
        } catch {
            return context.close(promise: nil)
        }
        let buffered = seen!
        seen = nil
        context.fireChannelRead(wrapInboundOut(buffered))
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
