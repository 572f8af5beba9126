import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS

/// A keep-alive connection to one worker, owned by one event loop's pool.
final class PooledConnection {
    let channel: any Channel
    let handler: UpstreamHandler
    let url: WorkerURL
    /// When it was last put back in the pool (`NIODeadline` uptime nanoseconds).
    var idleSince: UInt64 = 0
    init(channel: any Channel, handler: UpstreamHandler, url: WorkerURL) {
        self.channel = channel
        self.handler = handler
        self.url = url
    }

    /// Writes one whole request: its head, its body when it has one, its end, then flushes.
    /// Every worker call (an attempt, a prefill half, a control-path fetch) sends this way.
    func send(_ head: HTTPRequestHead, body: ByteBuffer?) {
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body, body.readableBytes > 0 { channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
    }
}

/// Upstream connections of one event loop, keyed by worker. Every channel in it lives on the
/// same loop as the client connections that use it, so there are no locks and no thread hops
/// between the client socket and the worker socket.
final class UpstreamPool {
    /// Opens a bare channel to a worker instead of dialing it: the in-process harness and the
    /// `upstream` fuzz target hand in scripted workers on embedded channels this way. The pool
    /// adds the HTTP client handlers as it does to a socket.
    typealias Connector = (WorkerURL, any EventLoop) -> EventLoopFuture<any Channel>

    let loop: any EventLoop
    private let connector: Connector?
    private let metrics: RouterMetrics
    private var idle: [WorkerURL: [PooledConnection]] = [:]
    /// Idle connections kept per worker; extra ones are closed when released.
    let maxIdlePerWorker: Int
    private let connectTimeout: TimeAmount
    /// For `https://` workers.
    private let tls: TLSContexts?
    /// `--upstream-pool-idle-timeout-secs` in nanoseconds (nil: idle connections are kept). A
    /// worker closes a connection idle past its own keep-alive (SGLang and vLLM: 5 s), and a
    /// request written to it as it closes is lost to a reset; closing ours sooner avoids the race.
    private let idleTimeoutNs: UInt64?
    /// The timer that closes connections idle too long (set while any are pooled).
    private var sweep: Scheduled<Void>?

    init(loop: any EventLoop, metrics: RouterMetrics, tls: TLSContexts? = nil, maxIdlePerWorker: Int = 128, connectTimeout: TimeAmount = .seconds(10),
         idleTimeout: TimeAmount? = nil, connector: Connector? = nil) {
        self.loop = loop
        self.connector = connector
        self.metrics = metrics
        self.tls = tls
        self.maxIdlePerWorker = maxIdlePerWorker
        self.connectTimeout = connectTimeout
        self.idleTimeoutNs = idleTimeout.map { UInt64(max($0.nanoseconds, 1)) }
    }

    /// Idle connections right now (for tests and status).
    var idleCount: Int { idle.values.reduce(0) { $0 + $1.count } }

    /// Hands out an idle connection to `url` or opens a new one (always, when `fresh`: after a
    /// stale pooled connection, the others pooled beside it may be stale too). Calls back on this loop.
    func acquire(_ url: WorkerURL, fresh: Bool = false, _ done: @escaping (Result<PooledConnection, any Error>) -> Void) {
        loop.preconditionInEventLoop()
        while !fresh, var list = idle[url], let c = list.popLast() {
            idle[url] = list.isEmpty ? nil : list
            guard c.channel.isActive else { continue }
            // The newest is idle too long: so are the ones pooled before it.
            if let limit = idleTimeoutNs, NIODeadline.now().uptimeNanoseconds &- c.idleSince >= limit {
                for old in [c] + list { old.channel.close(promise: nil) }
                idle[url] = nil
                break
            }
            done(.success(c))
            return
        }
        metrics.upstreamConnectionOpened()
        if let connector { return connectScripted(connector, url, done) }
        let tlsContext = url.isTLS ? tls?.clientContext : nil
        if url.isTLS, tlsContext == nil { return done(.failure(UpstreamError.tlsUnavailable)) }
        let handshake = loop.makePromise(of: Void.self)
        let bootstrap = ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        // SNI and hostname verification for names; an IP address is verified
                        // against the certificate's IP SANs.
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tlsContext, serverHostname: url.tlsServerName))
                        try channel.pipeline.syncOperations.addHandler(TLSHandshakeWaiter(handshake, peer: "the worker"))
                    } else {
                        handshake.succeed()
                    }
                    // Headers sent upstream were parsed from the client's request; validating
                    // them again on the way out is pure cost.
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(leftOverBytesStrategy: .dropBytes, enableOutboundHeaderValidation: false)
                    try channel.pipeline.syncOperations.addHandler(UpstreamHandler())
                }
            }
        // An IP address is connected to as it is: `connect(host:)` would resolve it first, on
        // the resolver's thread (a health check of a pod at an address nothing answers on was
        // mostly that resolution).
        let connect = (try? SocketAddress(ipAddress: url.host, port: url.port)).map { bootstrap.connect(to: $0) }
            ?? bootstrap.connect(host: url.host, port: url.port)
        connect.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                // A TLS connection is handed out once its handshake succeeded, so a certificate
                // that fails verification is a connect failure that says why.
                handshake.futureResult.assumeIsolated().whenComplete { shaken in
                    do {
                        try shaken.get()
                        let handler = try channel.pipeline.syncOperations.handler(type: UpstreamHandler.self)
                        done(.success(PooledConnection(channel: channel, handler: handler, url: url)))
                    } catch let failed as TLSHandshakeWaiter.Failed {
                        channel.close(promise: nil)
                        done(.failure(UpstreamError.tlsHandshake(failed.reason)))
                    } catch {
                        channel.close(promise: nil)
                        done(.failure(error))
                    }
                }
            case .failure(let error):
                handshake.fail(error)
                done(.failure(error))
            }
        }
    }

    private func connectScripted(_ connector: Connector, _ url: WorkerURL, _ done: @escaping (Result<PooledConnection, any Error>) -> Void) {
        connector(url, loop).assumeIsolated().whenComplete { result in
            do {
                let channel = try result.get()
                try channel.pipeline.syncOperations.addHTTPClientHandlers(leftOverBytesStrategy: .dropBytes, enableOutboundHeaderValidation: false)
                let handler = UpstreamHandler()
                try channel.pipeline.syncOperations.addHandler(handler)
                done(.success(PooledConnection(channel: channel, handler: handler, url: url)))
            } catch {
                done(.failure(error))
            }
        }
    }

    /// Returns a connection after a complete exchange; it is closed if the pool is full.
    func release(_ c: PooledConnection) {
        loop.preconditionInEventLoop()
        guard c.channel.isActive, idle[c.url, default: []].count < maxIdlePerWorker else {
            c.channel.close(promise: nil)
            return
        }
        c.handler.delegate = nil
        // A slow client may have paused reading on this connection; pooled ones always read.
        c.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        let id = ObjectIdentifier(c)
        let url = c.url
        c.handler.onClose = { [unowned self] in
            self.idle[url]?.removeAll { ObjectIdentifier($0) == id }
        }
        c.idleSince = NIODeadline.now().uptimeNanoseconds
        idle[c.url, default: []].append(c)
        if let limit = idleTimeoutNs, sweep == nil { scheduleSweep(in: limit) }
    }

    /// Closes the connections idle longer than the timeout, and comes back when the next one
    /// will be, while any are pooled.
    private func closeExpired() {
        sweep = nil
        guard let limit = idleTimeoutNs else { return }
        let now = NIODeadline.now().uptimeNanoseconds
        var next: UInt64?
        for (url, list) in idle {
            let (expired, kept) = (list.filter { now &- $0.idleSince >= limit }, list.filter { now &- $0.idleSince < limit })
            for c in expired { c.channel.close(promise: nil) }
            idle[url] = kept.isEmpty ? nil : kept
            if let oldest = kept.first { next = min(next ?? .max, oldest.idleSince + limit - now) }
        }
        if let next { scheduleSweep(in: next) }
    }

    private func scheduleSweep(in ns: UInt64) {
        // The pool lives on its loop and the timer runs there.
        let me = NIOLoopBound(self, eventLoop: loop)
        sweep = loop.scheduleTask(in: .nanoseconds(Int64(ns))) { me.value.closeExpired() }
    }

    /// Closes every idle connection (shutdown, or a worker removed).
    func closeIdle(to url: WorkerURL? = nil) {
        let victims: [PooledConnection]
        if let url {
            victims = idle.removeValue(forKey: url) ?? []
        } else {
            victims = idle.values.flatMap { $0 }
            idle.removeAll()
        }
        for c in victims { c.channel.close(promise: nil) }
    }
}

/// One pool per event loop, found from the loop a client connection runs on.
final class UpstreamPools: Sendable {
    private let pools: [ObjectIdentifier: LoopOwned<UpstreamPool>]

    init(group: any EventLoopGroup, metrics: RouterMetrics, tls: TLSContexts? = nil, idleTimeout: TimeAmount? = nil, connector: UpstreamPool.Connector? = nil) {
        var p: [ObjectIdentifier: LoopOwned<UpstreamPool>] = [:]
        for loop in group.makeIterator() {
            p[ObjectIdentifier(loop)] = LoopOwned(UpstreamPool(loop: loop, metrics: metrics, tls: tls, idleTimeout: idleTimeout, connector: connector), on: loop)
        }
        pools = p
    }

    /// The pool of `loop`; must be called on that loop.
    func pool(for loop: any EventLoop) -> UpstreamPool {
        guard let p = pools[ObjectIdentifier(loop)] else { preconditionFailure("no upstream pool for this event loop") }
        return p.value
    }

    var loops: [any EventLoop] { pools.values.map(\.eventLoop) }

    /// Closes idle connections on every loop: to `url` (a worker removed), or all (shutdown).
    func closeIdle(to url: WorkerURL? = nil) {
        for bound in pools.values {
            bound.eventLoop.execute { bound.value.closeIdle(to: url) }
        }
    }
}
