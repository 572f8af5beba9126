import Foundation
import TestSupport
import JWTKit
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A local OIDC issuer for tests: ES256 keys generated at test time, its discovery document and
/// JWKS served over real HTTP on a loopback port, and tokens signed with its keys.
final class TestIssuer: @unchecked Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var channel: (any Channel)?
    private let documents = NIOLockedValueBox<[String: String]>([:])
    private let signers = JWTKeyCollection()
    private(set) var port = 0
    private let scheme: String
    var url: String { "\(scheme)://127.0.0.1:\(port)" }
    /// How many times the JWKS was fetched.
    var jwksFetches: Int { fetches.withLockedValue { $0 } }
    private let fetches = NIOLockedValueBox(0)

    /// Serves over HTTPS with `certificate` when given.
    init(certificate: TestPKI.Issued? = nil) async throws {
        let documents = self.documents
        let fetches = self.fetches
        scheme = certificate == nil ? "http" : "https"
        let tls = try certificate.map { c in
            try NIOSSLContext(configuration: .makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(c.certificatePath).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: c.keyPath, format: .pem))))
        }
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(DocumentHandler(documents: documents, fetches: fetches))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel?.localAddress?.port ?? 0
        documents.withLockedValue {
            $0["/.well-known/openid-configuration"] = #"{"issuer":"\#(url)","jwks_uri":"\#(url)/keys"}"#
            $0["/keys"] = #"{"keys":[]}"#
        }
    }

    deinit { try? group.syncShutdownGracefully() }

    /// Publishes a new ES256 key under `kid` (alongside the ones already published).
    func addKey(_ kid: String) async throws {
        let key = ES256PrivateKey()
        await signers.add(ecdsa: key, kid: JWKIdentifier(string: kid))
        let (x, y) = key.publicKey.parameters!
        documents.withLockedValue {
            let old = $0["/keys"]!.dropLast(2)  // `]}`
            $0["/keys"] = old + (old.hasSuffix("[") ? "" : ",") + #"{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"\#(kid)","x":"\#(x)","y":"\#(y)"}]}"#
        }
    }

    struct Claims: JWTPayload {
        var iss: String
        var aud: String
        var sub: String
        var exp: Int
        var roles: [String]
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    /// A token signed with the key `kid`.
    func token(kid: String, sub: String = "alice", roles: [String], audience: String = "smg", issuer: String? = nil,
               expiresIn: TimeInterval = 300) async throws -> String {
        let claims = Claims(iss: issuer ?? url, aud: audience, sub: sub, exp: Int(Date().timeIntervalSince1970 + expiresIn), roles: roles)
        return try await signers.sign(claims, kid: JWKIdentifier(string: kid))
    }

    private final class DocumentHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let documents: NIOLockedValueBox<[String: String]>
        let fetches: NIOLockedValueBox<Int>
        init(documents: NIOLockedValueBox<[String: String]>, fetches: NIOLockedValueBox<Int>) {
            self.documents = documents
            self.fetches = fetches
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .head(let head) = unwrapInboundIn(data) else { return }
            if head.uri == "/keys" { fetches.withLockedValue { $0 += 1 } }
            let body = documents.withLockedValue { $0[head.uri] }
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "application/json")
            headers.add(name: "content-length", value: String(body?.utf8.count ?? 0))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: body == nil ? .notFound : .ok, headers: headers))), promise: nil)
            if let body { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil) }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
