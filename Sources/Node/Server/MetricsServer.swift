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
    /// The API port's client connections (`smg_http_connections_active`).
    private let connections: ConnectionTracker?
    private let deadline: ConnectionGuard?
    private var head: HTTPRequestHead?

    init(state: RouterState, connections: ConnectionTracker? = nil, deadline: ConnectionGuard? = nil) {
        self.state = state
        self.connections = connections
        self.deadline = deadline
    }

    /// One scrape: the gauges read at scrape time are set, then everything is rendered.
    static func scrape(_ state: RouterState, connections: ConnectionTracker? = nil) -> [UInt8] {
        state.metrics.policyState(state.registry.policyStateSizes, policy: state.config.policy.rawValue)
        state.metrics.admissionGauges(inFlight: state.admission.inFlight, queued: state.admission.queueDepth)
        if let connections { state.metrics.connectionsActive(connections.count) }
        if let rate = state.admission.tokenRate {
            state.metrics.setGauge("smg_rate_limit_tokens_per_second", "This router's admission rate: --rate-limit-tokens-per-second, or with the mesh its demand-following share of that cluster-wide budget", to: rate)
        }
        let memory = ProcessMemory.sample()
        state.metrics.setGauge("smg_allocator_allocated_bytes", "Bytes malloc has handed out and not had back (glibc mallinfo2: in-use arena bytes plus mmapped blocks)", to: Double(memory.allocated))
        if let resident = memory.resident {
            state.metrics.setGauge("smg_allocator_resident_bytes", "Resident bytes of the router process (/proc/self/statm)", to: Double(resident))
        }
        if let memory = state.history as? MemoryHistoryStore {
            let held = memory.counts
            state.metrics.historyMemoryRecords(responses: held.responses, conversations: held.conversations, items: held.items)
        }
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
                buffer.writeBytes(Self.scrape(state, connections: connections))
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
