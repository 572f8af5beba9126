import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A small HTTPS client for tests (NIO + swift-nio-ssl): one request per connection, trusting
/// only the given CA, reporting the server certificate's serial and each body piece as it comes.
enum TLSClient {
    struct Response {
        var status: Int
        var body: String
        /// The serial number of the certificate the server presented (hex, as swift-certificates prints it).
        var serverSerial: String?
        var pieces: Int
    }

    struct Failure: Error, CustomStringConvertible { let description: String }

    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    static func request(port: Int, caPath: String, method: HTTPMethod = .GET, path: String, body: String? = nil,
                        onPiece: (@Sendable (String) -> Void)? = nil) async throws -> Response {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caPath))
        configuration.minimumTLSVersion = .tlsv12
        let context = try NIOSSLContext(configuration: configuration)
        let collector = Collector(onPiece: onPiece)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: "localhost"))
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        var headers = HTTPHeaders()
        headers.add(name: "host", value: "localhost")
        headers.add(name: "connection", value: "close")
        if let body { headers.add(name: "content-type", value: "application/json"); headers.add(name: "content-length", value: String(body.utf8.count)) }
        channel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)), promise: nil)
        if let body { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: body))), promise: nil) }
        try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
        let response = try await collector.done.futureResult.get()
        try? await channel.close().get()
        return response
    }

    /// The certificate's serial, formatted like swift-certificates' `SerialNumber` description.
    static func serial(_ certificate: NIOSSLCertificate) -> String {
        (try? X509Bridge.serial(der: certificate.toDERBytes())) ?? "?"
    }

    private final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let done: EventLoopPromise<Response>
        let onPiece: (@Sendable (String) -> Void)?
        var response = Response(status: 0, body: "", serverSerial: nil, pieces: 0)
        init(onPiece: (@Sendable (String) -> Void)?) {
            self.onPiece = onPiece
            done = TLSClient.group.next().makePromise()
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                response.status = Int(head.status.code)
                // Read while the connection is surely up (the server may close right after the end).
                let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self).peerCertificate
                response.serverSerial = certificate.map { TLSClient.serial($0) }
            case .body(let buffer):
                let text = String(buffer: buffer)
                response.body += text
                response.pieces += 1
                onPiece?(text)
            case .end: done.succeed(response)
            }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            done.fail(Failure(description: "\(error)"))
            context.close(promise: nil)
        }
        func channelInactive(context: ChannelHandlerContext) {
            done.fail(Failure(description: "connection closed before the response ended"))
        }
    }
}
