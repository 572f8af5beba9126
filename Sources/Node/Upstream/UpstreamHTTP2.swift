import NIOCore
import NIOHTTP1
import NIOHTTP2

/// One HTTP/2 connection to a worker (`--upstream-http2`), owned by one event loop's pool:
/// every call to that worker from this loop is a stream on it, so a worker sees one connection
/// per router loop however many requests are in flight. Each stream is given the same HTTP/1
/// parts as a keep-alive connection (`HTTP2FramePayloadToHTTP1ClientCodec`), so `UpstreamCall`
/// and everything above it do not know which protocol carries them. Framing, HPACK and flow
/// control are swift-nio-http2's.
final class HTTP2Connection {
    let channel: any Channel
    let url: WorkerURL
    private let multiplexer: NIOHTTP2Handler.StreamMultiplexer
    /// The worker's `SETTINGS_MAX_CONCURRENT_STREAMS` (capped: a worker that sets none still
    /// gets a second connection past this many).
    var maxStreams: Int
    private(set) var openStreams = 0
    /// No new streams (the worker sent GOAWAY, or the pool let the connection go); the open
    /// ones finish, and the connection closes with the last (`drain()`).
    private(set) var draining = false
    /// When its last stream ended (`NIODeadline` uptime nanoseconds), for the idle timeout.
    private(set) var idleSince: UInt64
    /// Told when a stream ends and none is left (the pool's idle bookkeeping).
    var onIdle: (() -> Void)?

    /// Streams past this on one connection open a second one.
    static let streamCap = 1024

    init(channel: any Channel, multiplexer: NIOHTTP2Handler.StreamMultiplexer, url: WorkerURL, maxStreams: Int) {
        self.channel = channel
        self.multiplexer = multiplexer
        self.url = url
        self.maxStreams = maxStreams
        idleSince = NIODeadline.now().uptimeNanoseconds
    }

    /// Takes another stream: open, not told to go away, under the worker's limit.
    var usable: Bool { channel.isActive && !draining && openStreams < maxStreams }

    /// Opens a stream for one call. `reused`: the connection carried calls before this one (a
    /// stream it loses before any answer is then sent once more on a new connection, as a
    /// request on a stale keep-alive connection is).
    func openStream(reused: Bool, _ done: @escaping (Result<PooledConnection, any Error>) -> Void) {
        openStreams += 1
        let scheme: HTTP2FramePayloadToHTTP1ClientCodec.HTTPProtocol = url.isTLS ? .https : .http
        let promise = channel.eventLoop.makePromise(of: (any Channel).self)
        multiplexer.createStreamChannel(promise: promise) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: scheme))
                try stream.pipeline.syncOperations.addHandler(UpstreamHandler())
            }
        }
        promise.futureResult.assumeIsolated().whenComplete { [self] result in
            do {
                let stream = try result.get()
                let handler = try stream.pipeline.syncOperations.handler(type: UpstreamHandler.self)
                handler.reused = reused
                stream.closeFuture.assumeIsolated().whenComplete { [self] _ in streamEnded() }
                done(.success(PooledConnection(channel: stream, handler: handler, url: url, multiplexed: true)))
            } catch {
                streamEnded()
                done(.failure(error))
            }
        }
    }

    /// Takes no new streams, and closes once its open ones have ended.
    func drain() {
        draining = true
        if openStreams == 0 { channel.close(promise: nil) }
    }

    private func streamEnded() {
        openStreams -= 1
        guard openStreams == 0 else { return }
        if draining { return channel.close(promise: nil) }
        idleSince = NIODeadline.now().uptimeNanoseconds
        onIdle?()
    }

    /// Why a connection opened as HTTP/2 is not one.
    enum Refusal: Error, CustomStringConvertible {
        /// Connected, but the worker did not answer the preface with its SETTINGS: it speaks
        /// HTTP/1.1 (or nothing) on this port.
        case notHTTP2(String)
        var description: String {
            switch self {
            case .notHTTP2(let why): return "the worker does not speak HTTP/2: \(why)"
            }
        }
    }

    /// Adds the client's HTTP/2 handlers to a connected (or connecting) channel: completes
    /// `ready` with the connection once the worker's first SETTINGS arrived, or fails it with
    /// `Refusal.notHTTP2` when anything else does, the connection ends first, or `timeout`
    /// passes. Server pushes are refused (a worker has nothing to push).
    static func configure(_ channel: any Channel, url: WorkerURL, timeout: TimeAmount,
                          ready: EventLoopPromise<HTTP2Connection>) throws {
        var settings = nioDefaultSettings
        // Room for a whole streamed answer in flight per stream, as a socket buffer gives HTTP/1.
        settings.append(HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20))
        settings.append(HTTP2Setting(parameter: .enablePush, value: 0))
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = settings
        // Many streams share the connection's window: room for several at full stride.
        connection.targetWindowSize = 8 << 20
        var stream = NIOHTTP2Handler.StreamConfiguration()
        stream.targetWindowSize = 1 << 20
        let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .client, connectionConfiguration: connection, streamConfiguration: stream,
            inboundStreamInitializer: { pushed in pushed.close() })
        let watcher = HTTP2ConnectionWatcher(url: url, multiplexer: multiplexer, ready: ready, timeout: timeout)
        try channel.pipeline.syncOperations.addHandler(watcher)
    }
}

/// Follows an HTTP/2 connection's own frames (stream 0): the worker's SETTINGS make it ready
/// and set its stream limit; GOAWAY drains it; anything that breaks it before SETTINGS is the
/// answer that the worker does not speak HTTP/2.
final class HTTP2ConnectionWatcher: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame

    private let url: WorkerURL
    private let multiplexer: NIOHTTP2Handler.StreamMultiplexer
    private var ready: EventLoopPromise<HTTP2Connection>?
    private let timeout: TimeAmount
    private var deadline: Scheduled<Void>?
    private var connection: HTTP2Connection?

    init(url: WorkerURL, multiplexer: NIOHTTP2Handler.StreamMultiplexer, ready: EventLoopPromise<HTTP2Connection>, timeout: TimeAmount) {
        self.url = url
        self.multiplexer = multiplexer
        self.ready = ready
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: timeout) {
            bound.value.0.refuse(bound.value.1, "no SETTINGS within \(bound.value.0.timeout.nanoseconds / 1_000_000) ms")
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data).payload {
        case .settings(.settings(let settings)):
            let announced = settings.last { $0.parameter == .maxConcurrentStreams }.map { Int($0.value) }
            let limit = min(announced ?? HTTP2Connection.streamCap, HTTP2Connection.streamCap)
            if let connection {
                // A limit of 0 takes no new streams (a stream opened anyway would wait for ever).
                if announced != nil { connection.maxStreams = limit }
            } else if limit == 0 {
                refuse(context, "it takes no streams (SETTINGS_MAX_CONCURRENT_STREAMS 0)")
            } else if let ready {
                self.ready = nil
                deadline?.cancel()
                let c = HTTP2Connection(channel: context.channel, multiplexer: multiplexer, url: url, maxStreams: limit)
                connection = c
                ready.assumeIsolated().succeed(c)
            }
        case .goAway:
            connection?.drain()
            if connection == nil { refuse(context, "GOAWAY before SETTINGS") }
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        refuse(context, "\(error)")
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        refuse(context, "the connection closed before SETTINGS")
        context.fireChannelInactive()
    }

    private func refuse(_ context: ChannelHandlerContext, _ why: String) {
        deadline?.cancel()
        guard let ready else { return }
        self.ready = nil
        ready.fail(HTTP2Connection.Refusal.notHTTP2(why))
        context.close(promise: nil)
    }
}
