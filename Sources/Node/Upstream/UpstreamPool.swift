import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS

/// Upstream connections of one event loop, keyed by worker. Every channel in it lives on the
/// same loop as the client connections that use it, so there are no locks and no thread hops
/// between the client socket and the worker socket.
final class UpstreamPool {
    /// Opens a bare channel to a worker instead of dialing it: the in-process harness and the
    /// `upstream` fuzz target hand in scripted workers on embedded channels this way. The pool
    /// adds the HTTP client handlers as it does to a socket.
    typealias Connector = (WorkerURL, any EventLoop) -> EventLoopFuture<any Channel>

    let loop: any EventLoop
    let connector: Connector?
    let metrics: RouterMetrics
    private var idle: [WorkerURL: [PooledConnection]] = [:]
    /// Idle connections kept per worker; extra ones are closed when released.
    let maxIdlePerWorker: Int
    let connectTimeout: TimeAmount
    /// For `https://` workers.
    private let tls: TLSContexts?
    /// `--upstream-pool-idle-timeout-secs` in nanoseconds (nil: idle connections are kept). A
    /// worker closes a connection idle past its own keep-alive (SGLang and vLLM: 5 s), and a
    /// request written to it as it closes is lost to a reset; closing ours sooner avoids the race.
    let idleTimeoutNs: UInt64?
    /// The timer that closes connections idle too long (set while any are pooled).
    var sweep: Scheduled<Void>?

    /// `--upstream-http2` (UpstreamPool+HTTP2.swift): the workers that answered HTTP/2 when they
    /// were registered. Calls to them are streams on `http2[url]`; the rest use keep-alive
    /// HTTP/1.1 connections.
    var http2Workers: Set<WorkerURL> = []
    var http2: [WorkerURL: [HTTP2Connection]] = [:]
    /// Calls waiting for an HTTP/2 connection being opened, per worker: one connection is opened
    /// for a burst, not one per call.
    var opening: [WorkerURL: [(Result<PooledConnection, any Error>) -> Void]] = [:]
    /// Told when a worker marked HTTP/2 refused it on a new connection (its calls went on over
    /// HTTP/1.1): `UpstreamPools` tells every loop and the worker's record.
    var http2Refused: ((WorkerURL) -> Void)?

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
        if !http2Workers.isEmpty, http2Workers.contains(url) { return acquireStream(url, done) }
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
        connect(url, speaking: .http1) { result in
            done(result.flatMap { channel in
                Result(catching: { PooledConnection(channel: channel, handler: try channel.pipeline.syncOperations.handler(type: UpstreamHandler.self), url: url) })
            })
        }
    }

    /// What goes on a new connection's pipeline after TLS.
    enum WireProtocol {
        case http1
        /// HTTP/2, ready when the worker's SETTINGS arrive (or refused).
        case http2(EventLoopPromise<HTTP2Connection>)
    }

    /// Connects to `url` (TLS first for `https://`) and adds the protocol's handlers; calls back
    /// once the channel can carry a request: connected, and its TLS handshake done.
    func connect(_ url: WorkerURL, speaking proto: WireProtocol, _ done: @escaping (Result<any Channel, any Error>) -> Void) {
        let wantsH2: Bool
        if case .http2 = proto { wantsH2 = true } else { wantsH2 = false }
        let tlsContext = url.isTLS ? (wantsH2 ? tls?.http2ClientContext : tls?.clientContext) : nil
        if url.isTLS, tlsContext == nil { return done(.failure(UpstreamError.tlsUnavailable)) }
        let handshake = loop.makePromise(of: String?.self)
        let timeout = connectTimeout
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
                        handshake.succeed(nil)
                    }
                    switch proto {
                    case .http1:
                        // Headers sent upstream were parsed from the client's request; validating
                        // them again on the way out is pure cost.
                        try channel.pipeline.syncOperations.addHTTPClientHandlers(leftOverBytesStrategy: .dropBytes, enableOutboundHeaderValidation: false)
                        try channel.pipeline.syncOperations.addHandler(UpstreamHandler())
                    case .http2(let ready):
                        // Over TLS the handlers wait for ALPN's answer (below); h2c starts with the preface.
                        if tlsContext == nil { try HTTP2Connection.configure(channel, url: url, timeout: min(timeout, .seconds(5)), ready: ready) }
                    }
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
                        let negotiated = try shaken.get()
                        if case .http2(let ready) = proto, tlsContext != nil {
                            guard negotiated == "h2" else { throw HTTP2Connection.Refusal.notHTTP2("ALPN chose \(negotiated ?? "nothing")") }
                            try HTTP2Connection.configure(channel, url: url, timeout: min(timeout, .seconds(5)), ready: ready)
                        }
                        done(.success(channel))
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
        // A stream is not pooled: one whose answer ended closes itself; one still open is reset
        // (the stream, not the connection).
        if c.multiplexed { c.handler.delegate = nil; return c.abandon() }
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
        for c in http2.values.joined() where c.openStreams == 0 {
            if now &- c.idleSince >= limit { c.channel.close(promise: nil) } else { next = min(next ?? .max, c.idleSince + limit - now) }
        }
        if let next { scheduleSweep(in: next) }
    }

    func scheduleSweep(in ns: UInt64) {
        // The pool lives on its loop and the timer runs there.
        let me = NIOLoopBound(self, eventLoop: loop)
        sweep = loop.scheduleTask(in: .nanoseconds(Int64(ns))) { me.value.closeExpired() }
    }

    /// Closes every idle connection (shutdown, or a worker removed).
    func closeIdle(to url: WorkerURL? = nil) {
        let victims: [PooledConnection]
        let multiplexed: [HTTP2Connection]
        if let url {
            victims = idle.removeValue(forKey: url) ?? []
            multiplexed = http2[url] ?? []
        } else {
            victims = idle.values.flatMap { $0 }
            idle.removeAll()
            multiplexed = Array(http2.values.joined())
        }
        for c in victims { c.channel.close(promise: nil) }
        // An HTTP/2 connection's streams may be in flight: it takes no more and closes after them.
        for c in multiplexed { c.drain() }
    }
}
