import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A worker that records every request head it receives (as its own HTTP parser saw them) and
/// answers each with a small JSON 200: to see exactly what the router sends upstream.
final class RecordingWorker: @unchecked Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var channel: (any Channel)?
    private let heads = NIOLockedValueBox<[HTTPRequestHead]>([])
    private(set) var port = 0
    var url: String { "http://127.0.0.1:\(port)" }
    var received: [HTTPRequestHead] { heads.withLockedValue { $0 } }

    /// Connections accepted so far.
    var connections: Int { accepted.withLockedValue { $0 } }
    private let accepted = NIOLockedValueBox(0)
    /// Connections open now (accepted and not yet closed, by either side).
    var openConnections: Int { open.withLockedValue { $0 } }
    private let open = NIOLockedValueBox(0)

    /// `dropsReusedConnections`: each connection answers its first request and is closed, with
    /// no answer, when a second request arrives on it: the keep-alive connection a worker drops
    /// just as the router reuses it.
    init(dropsReusedConnections: Bool = false) async throws {
        let (heads, accepted, open) = (self.heads, self.accepted, self.open)
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                accepted.withLockedValue { $0 += 1 }
                open.withLockedValue { $0 += 1 }
                channel.closeFuture.whenComplete { _ in open.withLockedValue { $0 -= 1 } }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Recorder(heads: heads, dropsReuse: dropsReusedConnections))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel?.localAddress?.port ?? 0
    }

    deinit { try? group.syncShutdownGracefully() }

    /// Heads received on `path`.
    func requests(to path: String) -> [HTTPRequestHead] { received.filter { $0.uri == path } }

    private final class Recorder: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let heads: NIOLockedValueBox<[HTTPRequestHead]>
        let dropsReuse: Bool
        private var answered = 0
        init(heads: NIOLockedValueBox<[HTTPRequestHead]>, dropsReuse: Bool) {
            self.heads = heads
            self.dropsReuse = dropsReuse
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                heads.withLockedValue { $0.append(head) }
                if dropsReuse, answered > 0 { context.close(promise: nil) }
            case .body: break
            case .end:
                answered += 1
                let body = #"{"id":"cmpl-rec","object":"chat.completion","choices":[],"load":3}"#
                var headers = HTTPHeaders()
                headers.add(name: "content-type", value: "application/json")
                headers.add(name: "content-length", value: String(body.utf8.count))
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
