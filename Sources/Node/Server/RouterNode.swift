import Foundation
import Logging
import Mesh
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import PostgresNIO
import ServiceLifecycle
import Tracing

/// A running router node: its listeners are bound and its workers registered by `start`;
/// `run` runs every part of it as a service in one `ServiceGroup` until graceful shutdown
/// (`shutdown()`, which the launcher calls on SIGTERM or SIGINT), then closes its event loops.
///
/// Services, in start order (graceful shutdown stops them in reverse, each after the one before
/// has returned): metrics server, tree eviction, load monitor, model discovery, health checks,
/// rate-limit share, API server (the drain), mesh membership (the leave).
public final class RouterNode: Service, Sendable, CustomStringConvertible {
    public let state: RouterState
    public let apiPort: Int
    public let metricsPort: Int
    private let group: MultiThreadedEventLoopGroup
    private let services: ServiceGroup
    public var description: String { "router \(state.config.host):\(apiPort)" }

    private init(state: RouterState, group: MultiThreadedEventLoopGroup, apiPort: Int, metricsPort: Int, services: ServiceGroup) {
        self.state = state
        self.group = group
        self.apiPort = apiPort
        self.metricsPort = metricsPort
        self.services = services
    }

    /// Binds both servers (and the mesh port), registers the configured workers. `threads`
    /// defaults to one event loop per core this process may run on.
    /// `reloads`: SIGHUP, each a reload of the TLS certificates (`Launcher.Signals.reloads`).
    /// `upgrades`: SIGUSR2, each the start of an in-place upgrade: `commandLine` run again.
    /// `tracing`: with `--enable-trace`, where spans go (`TracingBackend`).
    public static func start(config: RouterConfig, logger: Logger, threads: Int = RouterNode.usableCores,
                             reloads: AsyncStream<Void>? = nil, upgrades: AsyncStream<Void>? = nil, commandLine: [String] = [],
                             tracing: TracingBackend? = nil) async throws -> RouterNode {
        // One logger per module, each at its level (`--log-level` directives).
        func log(_ module: LogLevels.Module) -> Logger { logger.module(module, config.logLevels) }
        let logger = log(.server)
        if !config.logLevels.ignoredTargets.isEmpty {
            logger.warning("RUST_LOG names targets smg does not have; they are ignored", metadata: [
                "targets": "\(config.logLevels.ignoredTargets.prefix(16).joined(separator: ","))",
                "modules": "\(LogLevels.Module.allCases.map(\.rawValue).joined(separator: ","))"])
        }
        // An in-place upgrade: the router serving behind --takeover-socket offers its sockets
        // first; nothing is bound before its offer is taken (or there is none: a first start).
        var takeover: Takeover?
        if let path = config.takeoverSocket { takeover = try Takeover.begin(path: path) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let metrics = RouterMetrics(durationBuckets: config.durationBuckets)
        let registry = WorkerRegistry(policy: config.policy, config: config.policyConfig, breaker: config.breaker, health: config.health,
                                      prefillPolicy: config.pd?.prefillPolicy, decodePolicy: config.pd?.decodePolicy, policiesFromLabels: config.igw, dpAware: config.dpAware,
                                      overloadShed: config.workerLoad.shed)
        // With --enable-trace: the tracer requests' spans go to, and the exporter's service.
        let backend = try tracing.map { make in try make { metrics.traceExportFailed() } }
        let (tracer, tracingService) = (backend?.tracer, backend?.service)
        let tls: TLSContexts
        do { tls = try TLSContexts(config.tls) } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        let idle = config.upstreamPoolIdleTimeoutSecs
        let pools = UpstreamPools(group: group, metrics: metrics, tls: tls, idleTimeout: idle > 0 ? .seconds(Int64(idle)) : nil)
        let mesh = config.mesh.map { m in
            var c = MeshService.Config(name: m.name, bindHost: m.host, port: m.port, advertise: m.advertise, peers: m.peers, keyring: m.keyring)
            c.node = .lan
            // The generation grows with every start (wall-clock ms), so a restart supersedes.
            return MeshService(config: c, generation: UInt64(Date().timeIntervalSince1970 * 1000), logger: log(.mesh), clock: MonotonicClock.nowMs)
        }
        let link = mesh.map { MeshLink(service: $0, registry: registry, config: config, loop: pools.loops.first, logger: log(.mesh)) }
        let jwt = try config.security.jwt.map { settings in
            try JWTAuthority(settings, fetch: { url in try await UpstreamFetch.get(url, pools: pools, timeout: .seconds(5)) },
                             onKeysFailure: { [logger = log(.security)] why in logger.error("JWT signing keys could not be loaded", metadata: ["reason": "\(why)"]) })
        }
        let history: any HistoryStore
        /// Each follows its Sentinels (when it has any) as a service of the group.
        var redisClients: [RedisClient] = []
        /// Its pool runs as a service of the group, shut down after everything that writes history.
        var postgres: PostgresClient?
        switch config.history {
        case .memory:
            history = MemoryHistoryStore(limits: config.historyMemory, onEvict: { [metrics] evicted, bytes in
                metrics.historyMemory(evicted: evicted.map { ($0.0.description, $0.1.rawValue) }, bytes: bytes)
            })
        case .none: history = NoHistoryStore()
        case .redis(let url, let poolSize, let retentionDays, let durability, let timeoutSecs):
            let redis = RedisClient(url: url, group: group, maxConnections: poolSize, commandTimeout: .seconds(Int64(timeoutSecs)), durability: durability,
                                    tls: { tls.redisContext }, logger: log(.redis))
            redisClients.append(redis)
            history = RedisHistoryStore(redis: redis, retentionDays: retentionDays)
        case .postgres(let url, let poolSize, let timeoutSecs, let retentionDays):
            let client = PostgresClient(configuration: try Self.postgresConfiguration(url, poolSize: poolSize, timeoutSecs: timeoutSecs, tls: config.tls),
                                        eventLoopGroup: group, backgroundLogger: log(.history))
            postgres = client
            history = PostgresHistoryStore(client: client, timeout: .seconds(timeoutSecs),
                                           retention: retentionDays < 0 ? nil : .seconds(Int64(retentionDays) * 86_400), logger: log(.history))
        }
        let writes = BackgroundWrites(logger: log(.history))
        var sessions: RedisSessions?
        if case .redis(let url, let poolSize) = config.sessionStore {
            // A client of its own: a session read gives up after 200 ms, and a command that
            // times out drops its connection, which must not cut history commands short.
            let redis = RedisClient(url: url, group: group, maxConnections: min(poolSize, 4), commandTimeout: .seconds(1), tls: { tls.redisContext },
                                    logger: log(.redis))
            redisClients.append(redis)
            sessions = RedisSessions(redis: redis, idleSecs: config.policyConfig.maxIdleSecs, logger: log(.redis), metrics: metrics, writes: writes)
            if config.policy != .manual {
                logger.warning("--session-store redis keeps manual's routing-key assignments; --policy \(config.policy.rawValue) makes none")
            }
        }
        let state = RouterState(config: config, registry: registry, metrics: metrics, logger: logger, pools: pools, mesh: link, jwt: jwt, tls: tls,
                                history: history, sessions: sessions, backgroundWrites: writes, tracer: tracer)
        let connections = ConnectionTracker()
        let deadlines = ClientDeadlines(group: group, metrics: metrics, logger: logger)
        var limits = config.clients
        if let files = OpenFileLimit.raise(), OpenFileLimit.clientConnections(fitting: files) < limits.maxConnections {
            limits.maxConnections = OpenFileLimit.clientConnections(fitting: files)
            logger.warning("--max-client-connections lowered to what the open-file limit allows", metadata: [
                "open_file_limit": "\(files)", "max_client_connections": "\(limits.maxConnections)"])
        }
        let clientLimits = limits
        let metricsLimits = clientLimits.forMetrics
        let metricsConnections = ConnectionTracker()
        do {
            let apiFD = try takeover?.take(.api, kind: .stream, port: config.port, flag: "--port")
                ?? BoundSocket.make(.stream, host: config.host, port: config.port, backlog: 1024)
            let metricsFD = try takeover?.take(.metrics, kind: .stream, port: config.prometheusPort, flag: "--prometheus-port")
                ?? BoundSocket.make(.stream, host: config.prometheusHost, port: config.prometheusPort, backlog: 128)
            var meshFDs: MeshService.Descriptors?
            if let m = config.mesh, let takeover,
               let datagram = try takeover.take(.meshDatagram, kind: .datagram, port: m.port, flag: "--mesh-port"),
               let listener = try takeover.take(.meshListener, kind: .stream, port: m.port, flag: "--mesh-port") {
                meshFDs = MeshService.Descriptors(datagram: datagram, listener: listener)
            }
            let api = try await ServerBootstrap(group: group)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(.allowRemoteHalfClosure, value: false)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let refusal = connections.add(channel, limit: clientLimits.maxConnections, perClient: clientLimits.maxPerClient) {
                            deadlines.refused(refusal == .total ? .maxConnections : .perClientLimit, nowMs: MonotonicClock.nowMs())
                            return try channel.pipeline.syncOperations.addHandler(RefuseConnection(refusal == .total ? .tooManyConnections : .tooManyConnectionsFromClient))
                        }
                        let deadline = ConnectionGuard(loop: deadlines.state(for: channel.eventLoop), limits: clientLimits)
                        try channel.pipeline.syncOperations.addHandler(deadline)
                        // HTTPS: the context current when the connection arrives (SIGHUP swaps it
                        // for new connections only). The handshake counts toward the header deadline.
                        if let tlsContext = tls.serverContext {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tlsContext))
                        }
                        // Outbound header validation is off: every header we write was parsed by
                        // llhttp (client or worker), is our own ASCII, or was checked for control
                        // characters where it entered (flags, control routes, mesh: `HeaderValue`);
                        // validation cost ~8% of router CPU.
                        // RouterHandler serves pipelined requests in order itself (see there).
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true, withOutboundHeaderValidation: false)
                        try channel.pipeline.syncOperations.addHandler(RouterHandler(state: state, pool: pools.pool(for: channel.eventLoop), deadline: deadline))
                    }
                }
                .withBoundSocket(apiFD).get()
            let metricsChannel = try await ServerBootstrap(group: group)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        guard metricsConnections.add(channel, limit: metricsLimits.maxConnections) == nil else {
                            deadlines.refused(.maxConnections, nowMs: MonotonicClock.nowMs())
                            return try channel.pipeline.syncOperations.addHandler(RefuseConnection())
                        }
                        let deadline = ConnectionGuard(loop: deadlines.state(for: channel.eventLoop), limits: metricsLimits)
                        try channel.pipeline.syncOperations.addHandler(deadline)
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(MetricsHandler(state: state, connections: connections, deadline: deadline))
                    }
                }
                .withBoundSocket(metricsFD).get()
            for (raw, role, bootstrapPort) in config.startupWorkers {
                let url = try WorkerURL(parsing: raw)
                if let w = try? registry.add(url: url, modelID: nil, role: role, bootstrapPort: bootstrapPort) {
                    log(.workers).info("worker added", metadata: ["worker": "\(w.url.canonical)", "id": "\(w.id)", "type": "\(role.rawValue)"])
                    state.discovery.discover(w)
                }
            }
            if let takeover { Self.inherit(takeover.offer.workers, state: state) }
            warnIfOpen(config, logger: logger)
            if let warning = config.mesh?.keyFileWarning { logger.warning("\(warning)") }
            if let warning = config.mesh?.advertiseWarning { logger.warning("\(warning)") }
            if let m = config.mesh, m.keyring == nil {
                logger.warning("the mesh runs UNSEALED (no --mesh-key-file or SMG_MESH_KEY): anyone who reaches port \(m.port) can join the cluster, read what it replicates and change it; make a key with `smg mesh-keygen`")
            }
            if let jwt {
                Task {
                    do { try await jwt.prefetch() } catch {
                        log(.security).warning("JWT signing keys not loaded yet; retried when a token arrives", metadata: ["error": "\(error)"])
                    }
                }
            }
            MeshBridge.start(state: state)
            MeshBridge.startFleetLoad(state: state)
            try await mesh?.start(group: group, ticking: false, inherited: meshFDs)
            // Start-up workers are this router's own writes: the others learn them too.
            for w in registry.all { MeshBridge.published(w, state: state) }

            let loop = group.next()
            let evictionInterval = TimeAmount.seconds(Int64(config.evictionIntervalSecs))
            // The exporter first, so it stops last: the spans of the requests drained at shutdown go out.
            var list: [any Service] = tracingService.map { [$0] } ?? []
            if let postgres { list.append(postgres) }
            list += [
                MetricsServer(channel: metricsChannel),
                // Shut down after the API server (the group goes in reverse), so the writes of
                // the last requests it drained are in before intake closes.
                state.backgroundWrites,
                // Slow clients: header, body and keep-alive deadlines, checked once a second.
                PeriodicTask("client deadlines", on: loop, initialDelay: .seconds(1), every: .seconds(1)) {
                    deadlines.sweep(nowMs: MonotonicClock.nowMs())
                },
                // Tree eviction and idle sticky keys.
                PeriodicTask("policy maintenance", on: loop, initialDelay: evictionInterval, every: evictionInterval) {
                    registry.maintainPolicies(now: MonotonicClock.nowMs())
                },
            ]
            let watch = WorkerWatch(config: config, registry: registry, pools: state.pools, metrics: state.metrics, logger: log(.workers),
                                    livenessChanged: { MeshBridge.livenessChanged($0, to: $1, state: state) })
            let screen = config.workerLoad
            state.metrics.prepareRoutingScreen(overload: screen.overload != nil, liveness: screen.liveness.wedgeMs > 0 || screen.liveness.stallMs > 0)
            HTTP2Negotiation.start(watch)
            if let monitor = LoadMonitor.service(watch) { list.append(monitor) }
            if let liveness = LivenessWatch.service(watch) { list.append(liveness) }
            if let discovery = state.discovery.service(watch) { list.append(discovery) }
            if let health = HealthChecker.service(watch, changed: { MeshBridge.healthObserved($0, status: $1, state: state) }) { list.append(health) }
            if let share = MeshBridge.budgetSharing(state: state) { list.append(share) }
            if let settings = config.fileDiscovery {
                let discovery = FileDiscovery(settings: settings, state: state)
                list.append(PeriodicTask("file discovery", on: loop, every: .seconds(1)) { discovery.tick(nowMs: MonotonicClock.nowMs()) })
            }
            if let settings = config.kubernetes {
                let access = try KubeAccess.infer()
                if access.insecure { log(.workers).warning("kubernetes API certificate checks are off (insecure-skip-tls-verify in the kubeconfig)") }
                log(.workers).info("kubernetes API", metadata: ["from": "\(access.origin)"])
                list.append(KubernetesDiscovery(settings: settings, state: state, api: try KubeAPI(access: access, group: group)))
            }
            if let store = history as? PostgresHistoryStore, store.retention != nil {
                // Expired rows are not read; this deletes them (every router: they share the work).
                list.append(PeriodicTask("history retention", on: loop, initialDelay: .seconds(60), every: .seconds(600)) { store.purgeInBackground() })
            }
            if let sessions = SessionReplication.service(state: state) { list.append(sessions) }
            list.append(APIServer(channel: api, connections: connections, state: state, gracePeriod: .seconds(config.shutdownGracePeriodSecs)))
            if let mesh { list.append(MeshMembership(mesh: mesh, state: state)) }
            if let reloads { list.append(CertificateReload(requests: reloads, tls: state.tls, logger: log(.security))) }
            if let upgrades { list.append(SuccessorLauncher(requests: upgrades, commandLine: commandLine, takeoverSocket: config.takeoverSocket, logger: log(.upgrade))) }
            for redis in redisClients where redis.followsSentinels { list.append(RedisSentinelFollower(client: redis)) }
            if let path = config.takeoverSocket {
                if let takeover {
                    let took = [HandoverOffer.Socket.api, .metrics] + (meshFDs == nil ? [] : [.meshDatagram, .meshListener])
                    do {
                        try takeover.complete(took: took, meshName: mesh?.config.name)
                        log(.upgrade).info("in-place upgrade: took over", metadata: [
                            "predecessor_pid": "\(takeover.offer.pid)", "sockets": "\(took.map(\.rawValue).joined(separator: ","))",
                            "workers": "\(takeover.offer.workers.count)"])
                    } catch {
                        // It died meanwhile: this router serves alone on the sockets, as it should.
                        log(.upgrade).warning("in-place upgrade: the predecessor did not hear that this router serves", metadata: ["error": "\(error)"])
                    }
                }
                let upgrade = RouterHandover(state: state, api: (api, apiFD), metrics: (metricsChannel, metricsFD), mesh: mesh)
                do {
                    list.append(try HandoverListener.listen(at: path, offer: upgrade.offer, handOver: upgrade.handOver, logger: log(.upgrade)))
                } catch {
                    // A first start fails; a successor serves on (its predecessor is draining).
                    guard takeover != nil else { throw error }
                    log(.upgrade).error("in-place upgrade: cannot listen for a successor; the next upgrade must restart", metadata: ["path": "\(path)", "error": "\(error)"])
                }
            }
            let services = ServiceGroup(configuration: ServiceGroupConfiguration(
                services: list.map { .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup) },
                logger: logger))
            return RouterNode(state: state, group: group, apiPort: api.localAddress?.port ?? 0,
                              metricsPort: metricsChannel.localAddress?.port ?? 0, services: services)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// The predecessor's workers (an in-place upgrade): health taken where this router has no
    /// verdict yet, and workers it does not know (added at run time, or discovered) added.
    private static func inherit(_ workers: [HandoverOffer.WorkerState], state: RouterState) {
        var added = 0
        for offered in workers {
            guard let url = try? WorkerURL(parsing: offered.url) else { continue }
            if let w = state.registry.worker(url: url.canonical) {
                w.inheritHealth(offered.health)
                continue
            }
            guard case .success(let r) = WorkerFields.Received.from(offered.settings),
                  let w = try? state.registry.add(url: url, modelID: r.model, role: r.role, bootstrapPort: r.bootstrapPort, labels: r.labels, apiKey: r.apiKey)
            else { continue }
            w.inheritHealth(offered.health)
            state.discovery.discover(w)
            added += 1
        }
        if added > 0 { state.log(.upgrade).info("in-place upgrade: workers taken over", metadata: ["added": "\(added)", "offered": "\(workers.count)"]) }
    }

    /// postgres-nio's settings for `--postgres-db-url`: TLS as its `sslmode` says (libpq's
    /// meanings; `verify-full` with the router's trust roots and client certificate).
    static func postgresConfiguration(_ url: PostgresURL, poolSize: Int, timeoutSecs: Int, tls: TLSSettings) throws(ConfigError) -> PostgresClient.Configuration {
        var unverified = TLSConfiguration.makeClientConfiguration()
        unverified.certificateVerification = .none
        let mode: PostgresClient.Configuration.TLS
        switch url.sslMode {
        case .disable: mode = .disable
        case .prefer: mode = .prefer(unverified)
        case .require: mode = .require(unverified)
        case .verifyFull: mode = .require(try TLSContexts.clientConfiguration(tls))
        }
        var c = PostgresClient.Configuration(host: url.host, port: url.port, username: url.user, password: url.password, database: url.database, tls: mode)
        c.options.maximumConnections = poolSize
        c.options.connectTimeout = .seconds(timeoutSecs)
        return c
    }

    /// Without any credential configured every route is open (as the reference gateway is by
    /// default); on an address other machines reach, that deserves one clear line.
    private static func warnIfOpen(_ config: RouterConfig, logger: Logger) {
        let loopback = ["127.0.0.1", "localhost", "::1"].contains(config.host) || config.host.hasPrefix("127.")
        if config.security.isOpen, !loopback {
            logger.warning("no authentication configured: anyone who reaches \(config.host):\(config.port) can add, change and remove workers; set --api-key or --control-plane-api-keys / --jwt-issuer")
        } else if !config.security.tenantKeys.isEmpty, !config.security.controlPlaneHasOwnCredentials, config.security.apiKey == nil {
            logger.warning("only --tenant-api-key is configured: the control plane is open to anyone who reaches \(config.host):\(config.port) (can add, change and remove workers); set --control-plane-api-keys or --jwt-issuer")
        } else if !config.security.controlPlaneHasOwnCredentials, config.security.apiKey != nil {
            logger.warning("--api-key is the only credential: every inference client that holds it is also an admin of the control plane (can add a worker that then receives users' prompts); give the control plane its own --control-plane-api-keys or --jwt-issuer")
        } else if config.security.controlPlaneHasOwnCredentials, config.security.apiKey == nil {
            let history = config.history == .none ? "" : " and stored conversations and responses (/v1/conversations, /v1/responses)"
            logger.warning("the control plane is guarded but inference\(history) is open to anyone who reaches \(config.host):\(config.port); set --api-key to guard it too")
        }
    }

    /// Serves until graceful shutdown; returns once every service has stopped and the event
    /// loops are closed (no timer of this router runs after that).
    public func run() async throws {
        do {
            try await services.run()
        } catch {
            state.logger.error("router stopped on an error", metadata: ["error": "\(error)"])
        }
        state.pools.closeIdle()
        try? await group.shutdownGracefully()
        state.logger.info("shutdown complete")
    }

    /// The cores this process may run on: NIO's `System.coreCount` honours cgroup quotas and
    /// cpusets but not the scheduler affinity (`taskset`, `numactl`, systemd's CPUAffinity=);
    /// two event loops on one allowed core only take turns and pay the switches.
    public static var usableCores: Int {
        // "Cpus_allowed:\t00000000,00000003": the affinity mask, in hex words.
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") }) {
            let allowed = line.dropFirst("Cpus_allowed:".count).reduce(0) { n, c in n + (c.hexDigitValue?.nonzeroBitCount ?? 0) }
            if allowed > 0 { return min(allowed, System.coreCount) }
        }
        return System.coreCount
    }

    /// Starts the graceful shutdown `run` is waiting for (as SIGTERM would).
    public func shutdown() async {
        await services.triggerGracefulShutdown()
    }
}
