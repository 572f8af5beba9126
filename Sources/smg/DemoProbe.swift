import NIOCore
import NIOHTTP1
import NIOPosix

/// `GET http://127.0.0.1:port/path` for the demo's readiness wait: the status and body, or nil
/// when nothing answers within a second.
enum DemoProbe {
    private final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let done: EventLoopPromise<(Int, String)>
        private var status = 0
        private var body = ""
        init(done: EventLoopPromise<(Int, String)>) { self.done = done }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h): status = Int(h.status.code)
            case .body(let b): body += String(buffer: b)
            case .end:
                done.succeed((status, body))
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) { done.fail(ChannelError.eof) }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    static func get(port: Int, path: String) async -> (status: Int, body: String)? {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let done = loop.makePromise(of: (Int, String).self)
        let timeout = loop.scheduleTask(in: .seconds(1)) { done.fail(ChannelError.connectTimeout(.seconds(1))) }
        defer { timeout.cancel() }
        do {
            let channel = try await ClientBootstrap(group: loop)
                .connectTimeout(.seconds(1))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(Collector(done: done))
                    }
                }
                .connect(host: "127.0.0.1", port: port).get()
            var headers = HTTPHeaders()
            headers.add(name: "host", value: "127.0.0.1")
            channel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)), promise: nil)
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            let (status, body) = try await done.futureResult.get()
            return (status, body)
        } catch {
            done.fail(error)
            return nil
        }
    }
}
