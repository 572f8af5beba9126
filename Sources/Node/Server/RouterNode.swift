import Foundation
import Logging
import Mesh
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A running router node: the API server, the metrics server and the shared state, with a
/// graceful shutdown that lets in-flight requests (streams included) finish.
public final class RouterNode: Sendable {
    public let state: RouterState
    private let group: MultiThreadedEventLoopGroup
    private let apiChannel: any Channel
    private let metricsChannel: any Channel
    private let connections: ConnectionTracker
    public let apiPort: Int
    public let metricsPort: Int

    private init(state: RouterState, group: MultiThreadedEventLoopGroup, api: any Channel, metrics: any Channel, connections: ConnectionTracker) {
        self.state = state
        self.group = group
        self.apiChannel = api
        self.metricsChannel = metrics
        self.connections = connections
        self.apiPort = api.localAddress?.port ?? 0
        self.metricsPort = metrics.localAddress?.port ?? 0
    }

    /// Binds both servers and registers the configured workers. `threads` defaults to one event
    /// loop per core.
    public static func start(config: RouterConfig, logger: Logger, threads: Int = System.coreCount) async throws -> RouterNode {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let metrics = RouterMetrics(durationBuckets: config.durationBuckets)
        let registry = WorkerRegistry(policy: config.policy, config: config.policyConfig, breaker: config.breaker, health: config.health)
        let pools = UpstreamPools(group: group, metrics: metrics)
        var mesh: MeshService?
        if let m = config.mesh {
            var c = MeshService.Config(name: m.name, bindHost: m.host, port: m.port, advertise: m.advertise, peers: m.peers, keyring: m.keyring)
            // Tuned so a dead router is noticed within 3 s even on a busy machine (typically
            // ~1.5 s in a 3-node mesh), at ~1 KB/s per idle node.
            c.node.swim.protocolPeriodMs = 250
            c.node.swim.probeTimeoutMs = 100
            c.node.swim.suspicionMult = 3
            c.node.swim.suspicionMaxMult = 3
            // The generation grows with every start (wall-clock ms), so a restart supersedes.
            let generation = UInt64(Date().timeIntervalSince1970 * 1000)
            mesh = MeshService(config: c, generation: generation, logger: logger, clock: RouterState.monotonicMs)
        }
        let state = RouterState(config: config, registry: registry, metrics: metrics, logger: logger, pools: pools, mesh: mesh)
        let connections = ConnectionTracker()
        do {
            let api = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(.allowRemoteHalfClosure, value: false)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        connections.add(channel)
                        // Outbound header validation is off: every header we write was parsed by
                        // llhttp (client or worker) or is our own ASCII; it cost ~8% of router CPU.
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true, withOutboundHeaderValidation: false)
                        try channel.pipeline.syncOperations.addHandler(RouterHandler(state: state, pool: pools.pool(for: channel.eventLoop)))
                    }
                }
                .bind(host: config.host, port: config.port).get()
            let metricsServer = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(MetricsHandler(state: state))
                    }
                }
                .bind(host: config.prometheusHost, port: config.prometheusPort).get()
            let node = RouterNode(state: state, group: group, api: api, metrics: metricsServer, connections: connections)
            if config.policy == .power_of_two { LoadMonitor.start(state: state) }
            // Tree eviction and idle sticky keys, every --eviction-interval.
            let interval = TimeAmount.seconds(Int64(config.evictionIntervalSecs))
            group.next().scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
                registry.maintainPolicies(now: NIODeadline.now().uptimeNanoseconds / 1_000_000)
            }
            for raw in config.workerURLs {
                let url = try WorkerURL(parsing: raw)
                if let w = try? registry.add(url: url, modelID: nil) {
                    logger.info("worker added", metadata: ["worker": "\(w.url.canonical)", "id": "\(w.id)"])
                    ModelDiscovery.start(for: w, state: state)
                }
            }
            HealthChecker.start(state: state)
            MeshBridge.start(state: state)
            MeshBridge.startBudgetSharing(state: state)
            try await mesh?.start(group: group)
            // Start-up workers are this router's own writes: the others learn them too.
            for w in registry.all { MeshBridge.published(w, state: state) }
            return node
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// SIGTERM behaviour: `/readiness` turns 503, the listener closes, in-flight requests get
    /// up to the grace period, then every connection is closed.
    public func shutdown(gracePeriod: Duration? = nil) async {
        let grace = gracePeriod ?? .seconds(state.config.shutdownGracePeriodSecs)
        state.startDraining()
        // Leave the mesh first, so peers see a graceful leave at once, not a failure later.
        await state.mesh?.leave()
        state.logger.info("shutting down: draining in-flight requests", metadata: ["in_flight": "\(state.inFlight)", "grace_secs": "\(grace.components.seconds)"])
        try? await apiChannel.close()
        let clock = ContinuousClock()
        let deadline = clock.now + grace
        while state.inFlight > 0, clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let left = state.inFlight
        if left > 0 { state.logger.warning("grace period over: closing requests still in flight", metadata: ["in_flight": "\(left)"]) }
        connections.closeAll()
        state.pools.closeAllIdle()
        try? await metricsChannel.close()
        try? await group.shutdownGracefully()
        state.logger.info("shutdown complete")
    }
}

/// Open client connections, so shutdown can close idle keep-alive ones after the drain.
final class ConnectionTracker: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        channels.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in self?.channels.withLock { _ = $0.removeValue(forKey: id) } }
    }

    func closeAll() {
        for c in channels.withLock({ Array($0.values) }) { c.close(promise: nil) }
    }
}

/// `GET /metrics` on the Prometheus port.
final class MetricsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    private let state: RouterState
    private var head: HTTPRequestHead?

    init(state: RouterState) { self.state = state }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let h = head else { return }
            head = nil
            let ok = h.method == .GET && RequestTarget(h.uri).path == "/metrics"
            var buffer = context.channel.allocator.buffer(capacity: 0)
            if ok {
                state.metrics.policyState(state.registry.policyStateSizes, policy: state.config.policy.rawValue)
                state.metrics.admissionGauges(inFlight: state.admission.inFlight, queued: state.admission.queueDepth)
                if let mesh = state.mesh { state.metrics.meshGauges(mesh.status()) }
                buffer.writeBytes(state.metrics.render(workers: state.registry.all))
            } else { buffer.writeString("not found: metrics are at GET /metrics\n") }
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: ok ? "text/plain; version=0.0.4" : "text/plain")
            headers.add(name: "content-length", value: String(buffer.readableBytes))
            if !h.isKeepAlive { headers.add(name: "connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: ok ? .ok : .notFound, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            let keepAlive = h.isKeepAlive
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                if !keepAlive { context.close(promise: nil) }
            }
        }
    }
}
