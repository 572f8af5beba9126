import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// The few calls discovery makes to the Kubernetes API server: list a page of pods, and watch
/// pods as a stream of newline-separated JSON events. One connection per call (a watch holds
/// its own for minutes; lists are rare), HTTP/1.1 over swift-nio-ssl, with NIO's async channel so
/// a slow consumer slows the reading instead of buffering without end.
///
/// Bounded: a list page is at most `maxListBytes`, a watch event `maxEventBytes` (the API server's
/// own object limit is 1.5 MiB); a call that passes its deadline is cut.
final class KubeAPI: Sendable {
    let access: KubeAccess
    private let group: any EventLoopGroup
    private let context: NIOSSLContext?

    static let maxListBytes = 64 << 20
    static let maxEventBytes = 8 << 20

    init(access: KubeAccess, group: any EventLoopGroup) throws(ConfigError) {
        self.access = access
        self.group = group
        do {
            context = try access.tls.map { try NIOSSLContext(configuration: $0) }
        } catch {
            throw ConfigError("Kubernetes API TLS (\(access.origin)): \(error)")
        }
    }

    /// An answer other than 200, with the API's `Status` when the body held one.
    struct Failure: Error, CustomStringConvertible {
        let httpStatus: Int
        let status: KubeStatus
        var description: String { "HTTP \(httpStatus)\(status.description.isEmpty ? "" : ": \(status)")" }
        /// 410 Gone: the resourceVersion or continue token is too old.
        var expired: Bool { httpStatus == 410 || status.expired }
    }

    struct CallError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    /// `GET target`: the whole body of a 200 answer.
    func get(_ target: String, timeout: Duration) async throws -> [UInt8] {
        var body: [UInt8] = []
        try await call(target, timeout: timeout) { buffer in
            guard body.count + buffer.readableBytes <= Self.maxListBytes else { throw CallError("answer larger than \(Self.maxListBytes) bytes") }
            body.append(contentsOf: buffer.readableBytesView)
        }
        return body
    }

    /// `GET target` of a watch: calls `line` for each event line as it arrives, until the server
    /// ends the stream (its `timeoutSeconds`), `line` throws, or `timeout` passes.
    func watch(_ target: String, timeout: Duration, line: ([UInt8]) throws -> Void) async throws {
        var lines = WatchLines(maxLine: Self.maxEventBytes)
        try await call(target, timeout: timeout) { buffer in
            for l in try lines.feed(buffer.readableBytesView) { try line(l) }
        }
        if let last = lines.finish() { try line(last) }
    }

    private func call(_ target: String, timeout: Duration, body: (ByteBuffer) throws -> Void) async throws {
        var headers = HTTPHeaders()
        headers.add(name: "host", value: access.host.contains(":") ? "[\(access.host)]:\(access.port)" : "\(access.host):\(access.port)")
        headers.add(name: "user-agent", value: "smg")
        headers.add(name: "accept", value: "application/json")
        if let auth = try access.authorization() { headers.add(name: "authorization", value: auth) }
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: access.pathPrefix + target, headers: headers)
        let context = self.context, serverName = access.serverName
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(.seconds(10))
            .connect(host: access.host, port: access.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context { try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: serverName)) }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                }
            }
        // The deadline closes the channel, which ends the reading below with an error.
        let deadline = channel.channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)) {
            channel.channel.close(promise: nil)
        }
        defer { deadline.cancel() }
        try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(.head(head))
            try await outbound.write(.end(nil))
            var status = 0
            var errorBody: [UInt8] = []
            for try await part in inbound {
                switch part {
                case .head(let h):
                    status = Int(h.status.code)
                case .body(let buffer):
                    if status == 200 {
                        try body(buffer)
                    } else if errorBody.count < 64 << 10 {
                        errorBody.append(contentsOf: buffer.readableBytesView.prefix(64 << 10 - errorBody.count))
                    }
                case .end:
                    guard status == 200 else { throw Failure(httpStatus: status, status: KubeStatus(JSONValue.parse(errorBody))) }
                    return
                }
            }
            throw CallError("the API server closed the connection before the answer ended")
        }
    }
}

extension KubeAPI {
    /// The path of pods in `namespace` (nil: every namespace) with the query `parameters`.
    static func podsTarget(namespace: String?, _ parameters: [(String, String)]) -> String {
        let path = namespace.map { "/api/v1/namespaces/\(percentEncoded($0))/pods" } ?? "/api/v1/pods"
        guard !parameters.isEmpty else { return path }
        return path + "?" + parameters.map { "\($0.0)=\(percentEncoded($0.1))" }.joined(separator: "&")
    }

    /// RFC 3986 unreserved characters stay; everything else is %XX.
    static func percentEncoded(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                let hex = String(b, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }
}
