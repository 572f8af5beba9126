// Reaches into the router's internals (`@testable`), which debug and fuzzing builds
// (`-enable-testing`) allow; a plain release build compiles this out.
#if DEBUG || FUZZING
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
@testable import Node
import TestSupport

/// The whole request path of a router (`RouterHandler`, the exchange and its machine, the
/// upstream pool) on one embedded event loop, with scripted workers: every connection the router
/// opens to a worker is an embedded channel (through `UpstreamPool.Connector`) on which a test or
/// a fuzz target reads what the router sent and writes what the worker answers, byte for byte,
/// and time moves only when told to. Nothing is dialed, nothing sleeps, and every run is the
/// same. For what needs no process and no socket: PD halves, retries, deadlines, pipelining,
/// the bytes of answers and errors.
///
/// Workers come from the command line (`--worker-urls`, `--prefill`, `--decode`), as in a
/// router, and are healthy from the start (`--disable-health-check` is added).
public final class EmbeddedRouter {
    public let loop = EmbeddedEventLoop()
    let state: RouterState
    /// A connection the router opened to a worker.
    public struct Upstream {
        public let worker: String
        public let channel: EmbeddedChannel
    }
    /// Every connection the router opened, in order.
    public private(set) var upstreams: [Upstream] = []

    public init(_ arguments: [String]) throws {
        let config = try RouterConfig.load(arguments: arguments + ["--disable-health-check"], environment: [:])
        let metrics = RouterMetrics(durationBuckets: config.durationBuckets)
        let registry = WorkerRegistry(policy: config.policy, config: config.policyConfig, breaker: config.breaker, health: config.health)
        for (raw, role, bootstrapPort) in config.startupWorkers {
            _ = try? registry.add(url: try WorkerURL(parsing: raw), modelID: nil, role: role, bootstrapPort: bootstrapPort)
        }
        let loop = self.loop
        var opened: (Upstream) -> Void = { _ in }
        let pools = UpstreamPools(group: loop, metrics: metrics) { url, _ in
            let channel = EmbeddedChannel(loop: loop)
            _ = channel.connect(to: try! SocketAddress(ipAddress: "198.18.0.9", port: 8000))
            opened(Upstream(worker: url.canonical, channel: channel))
            return loop.makeSucceededFuture(channel)
        }
        state = RouterState(config: config, registry: registry, metrics: metrics,
                            logger: Logger(label: "embedded", factory: { _ in SwiftLogNoOpLogHandler() }), pools: pools,
                            tls: try Self.tls(config))
        opened = { [unowned self] in self.upstreams.append($0) }
    }

    /// TLS contexts load the system's CA store: built once (a harness router has no TLS of its
    /// own; its workers are embedded channels).
    nonisolated(unsafe) private static var sharedTLS: TLSContexts?
    private static func tls(_ config: RouterConfig) throws -> TLSContexts {
        if let c = sharedTLS { return c }
        let c = try TLSContexts(config.tls)
        sharedTLS = c
        return c
    }

    /// A client connection to the API port.
    public func connect() -> Client {
        let channel = EmbeddedChannel(loop: loop)
        try! channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
        try! channel.pipeline.syncOperations.addHandler(RouterHandler(state: state, pool: state.pools.pool(for: loop)))
        _ = channel.connect(to: try! SocketAddress(ipAddress: "127.0.0.1", port: 1))
        return Client(channel: channel, loop: loop)
    }

    public final class Client {
        public let channel: EmbeddedChannel
        let loop: EmbeddedEventLoop
        private var received: [UInt8] = []
        init(channel: EmbeddedChannel, loop: EmbeddedEventLoop) {
            self.channel = channel
            self.loop = loop
        }

        /// Writes raw request bytes and lets the router act on them.
        public func send(_ raw: String) {
            _ = try? channel.writeInbound(ByteBuffer(string: raw))
            loop.run()
        }

        /// A POST with a JSON body.
        public func post(_ path: String, _ body: String, headers: [String] = []) {
            send("POST \(path) HTTP/1.1\r\nhost: r\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n"
                 + headers.map { $0 + "\r\n" }.joined() + "\r\n" + body)
        }

        /// Everything the router wrote to this client so far.
        public var output: String {
            while let b = try? channel.readOutbound(as: ByteBuffer.self) { received += b.readableBytesView }
            return String(decoding: received, as: UTF8.self)
        }

        public var isOpen: Bool { channel.isActive }

        /// The client goes away.
        public func close() {
            channel.close(promise: nil)
            loop.run()
        }
    }

    /// What the router wrote on upstream connection `index` so far (and takes it off the channel).
    public func sent(on index: Int) -> String {
        String(decoding: sentBytes(on: index), as: UTF8.self)
    }

    /// The same, as bytes (HTTP/2 frames are binary).
    public func sentBytes(on index: Int) -> [UInt8] {
        var out: [UInt8] = []
        while let b = try? upstreams[index].channel.readOutbound(as: ByteBuffer.self) { out += b.readableBytesView }
        while let d = try? upstreams[index].channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let b) = d { out += b.readableBytesView }
        }
        return out
    }

    /// Calls to the worker at `url` become HTTP/2 streams (as `--upstream-http2` after the worker
    /// answered it): its connections then carry the HTTP/2 preface, frames and streams.
    public func speakHTTP2(_ url: String) {
        state.pools.setHTTP2(try! WorkerURL(parsing: url), true)
        loop.run()
    }

    /// An HTTP/2 frame as a worker writes it: its 9-byte header and payload (type 0 DATA,
    /// 1 HEADERS, 3 RST_STREAM, 4 SETTINGS, 6 PING, 7 GOAWAY, 8 WINDOW_UPDATE; flags 0x1
    /// END_STREAM or ACK, 0x4 END_HEADERS).
    public static func h2Frame(_ type: UInt8, flags: UInt8 = 0, stream: UInt32 = 0, _ payload: [UInt8] = []) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags,
                UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)] + payload
    }

    /// An HTTP/2 header block (HPACK): `:status` from the static table (0x88 is 200, 0x8e 500)
    /// and a content-type literal (static name 31, not indexed).
    public static func h2Head(status: UInt8, contentType: String) -> [UInt8] {
        [status, 0x0F, 0x10, UInt8(contentType.utf8.count)] + Array(contentType.utf8)
    }

    /// The worker on upstream connection `index` writes `raw` (any bytes, any part of an answer).
    public func answer(on index: Int, _ raw: String) {
        answer(on: index, bytes: Array(raw.utf8))
    }

    public func answer(on index: Int, bytes: [UInt8]) {
        _ = try? upstreams[index].channel.writeInbound(ByteBuffer(bytes: bytes))
        loop.run()
    }

    /// The worker closes upstream connection `index`.
    public func closeUpstream(_ index: Int) {
        upstreams[index].channel.close(promise: nil)
        loop.run()
    }

    /// Time passes on the router's loop: timers due by then fire.
    public func advance(by amount: TimeAmount) {
        loop.advanceTime(by: amount)
        loop.run()
    }

    /// A whole worker answer: a status, JSON headers and `body`.
    public static func answer(status: Int = 200, _ body: String, headers: [String] = []) -> String {
        "HTTP/1.1 \(status) \(HTTPResponseStatus(statusCode: status).reasonPhrase)\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n"
            + headers.map { $0 + "\r\n" }.joined() + "\r\n" + body
    }

    /// What the router still counts as running: requests, admission slots, and per worker its
    /// in-flight halves. Empty once everything began has ended.
    public var leaks: [String] {
        var found: [String] = []
        if state.inFlight != 0 { found.append("\(state.inFlight) requests in flight") }
        if state.admission.inFlight != 0 { found.append("\(state.admission.inFlight) admission slots held") }
        for w in state.registry.all where w.inFlight != 0 { found.append("\(w.url.canonical): \(w.inFlight) in flight") }
        return found
    }

    /// The circuit breaker of the worker at `url` (`closed`, `open`, `half_open`).
    public func breaker(_ url: String) -> String {
        state.registry.all.first { $0.url.canonical == url }?.breakerState.rawValue ?? "?"
    }

    /// A counter or gauge sample from the router's /metrics (`name{labels}`), 0 when absent.
    public func metric(_ sample: String) -> Double {
        metricSample(sample, in: String(decoding: MetricsHandler.scrape(state), as: UTF8.self))
    }
}
#endif
