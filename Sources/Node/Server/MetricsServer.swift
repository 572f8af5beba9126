import NIOCore
import NIOHTTP1
import ServiceLifecycle

/// The Prometheus endpoint (`--prometheus-host`, `--prometheus-port`) as a service: it serves
/// until graceful shutdown, which closes its listener.
struct MetricsServer: Service, CustomStringConvertible {
    let channel: any Channel
    var description: String { "metrics server" }

    func run() async throws {
        try? await gracefulShutdown()
        try? await channel.close()
    }
}

/// `GET /metrics` on the Prometheus port.
final class MetricsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    private let state: RouterState
    private let deadline: ConnectionGuard?
    private var head: HTTPRequestHead?

    init(state: RouterState, deadline: ConnectionGuard? = nil) {
        self.state = state
        self.deadline = deadline
    }

    /// One scrape: the gauges read at scrape time are set, then everything is rendered.
    static func scrape(_ state: RouterState) -> [UInt8] {
        state.metrics.policyState(state.registry.policyStateSizes, policy: state.config.policy.rawValue)
        state.metrics.admissionGauges(inFlight: state.admission.inFlight, queued: state.admission.queueDepth)
        MeshBridge.updateGauges(state)
        if let redis = (state.history as? RedisHistoryStore)?.redis { state.metrics.redisPool("history", redis) }
        if let redis = state.sessions?.redis { state.metrics.redisPool("sessions", redis) }
        return state.metrics.render(workers: state.registry.all)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            deadline?.headReceived()
        case .body: deadline?.bodyProgress()
        case .end:
            guard let h = head else { return }
            head = nil
            deadline?.serving()
            let ok = h.method == .GET && RequestTarget(h.uri).path == "/metrics"
            var buffer = context.channel.allocator.buffer(capacity: 0)
            if ok {
                buffer.writeBytes(Self.scrape(state))
            } else { buffer.writeString("not found: metrics are at GET /metrics\n") }
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: ok ? "text/plain; version=0.0.4" : "text/plain")
            headers.add(name: "content-length", value: String(buffer.readableBytes))
            if !h.isKeepAlive { headers.add(name: "connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: ok ? .ok : .notFound, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            let keepAlive = h.isKeepAlive
            deadline?.idle()
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                if !keepAlive { context.close(promise: nil) }
            }
        }
    }
}
