#if DEBUG || FUZZING
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
@testable import Node
import Primitives

/// What workers' connections deliver, through the whole exchange: a client sends one request (or
/// two, pipelined) and the input scripts the workers the router calls: bytes on a connection
/// (raw, or pieces of real answers: heads, chunked streams, error statuses, a `/generate` answer
/// with prompt logprobs), a connection closed, time passing (deadlines and backoffs fire), the
/// client leaving. Regular and PD exchanges, streamed or not, with PD's logprob merge, with
/// retries and breakers. Every connection the router opens is an embedded channel handed in
/// through `UpstreamPool.Connector`; nothing is dialed.
///
/// A finding is a crash (a precondition of the exchange machine: an event a worker made the
/// shell send out of order) or a leak once the client and every worker are gone: a request, an
/// admission slot or a worker's in-flight count not given back.
extension FuzzTarget {
    static let upstreamLoop = EmbeddedEventLoop()
    /// The connections the router opened in this run, in order.
    nonisolated(unsafe) static var upstreamChannels: [EmbeddedChannel] = []

    static let upstreamConfigs: [RouterConfig] = [false, true].map { pd in
        var args = ["--disable-health-check", "--retry-max-retries", "2", "--retry-initial-backoff-ms", "10", "--retry-jitter-factor", "0",
                    "--request-timeout-secs", "30", "--cb-failure-threshold", "3", "--policy", "round_robin"]
        if pd {
            args += ["--pd-disaggregation", "--prefill", "http://198.18.0.1:8000", "9000", "--prefill", "http://198.18.0.2:8000", "9000",
                     "--decode", "http://198.18.0.3:8000", "--decode", "http://198.18.0.4:8000"]
        } else {
            args += ["--worker-urls", "http://198.18.0.1:8000", "http://198.18.0.2:8000"]
        }
        return try! RouterConfig.load(arguments: args, environment: [:])
    }
    static let upstreamMetrics = RouterMetrics(durationBuckets: upstreamConfigs[0].durationBuckets)
    /// Built once: loading the system's CA store per input would be most of a run.
    static let upstreamTLS = try! TLSContexts(upstreamConfigs[0].tls)

    /// A fresh router (registry, breakers, pools) per input, so no run inherits another's
    /// open breakers or pooled connections.
    static func upstreamRouter(pd: Bool) -> RouterState {
        let config = upstreamConfigs[pd ? 1 : 0]
        let registry = WorkerRegistry(policy: config.policy, config: config.policyConfig, breaker: config.breaker, health: config.health)
        if pd {
            for host in ["198.18.0.1", "198.18.0.2"] { _ = try? registry.add(url: try! WorkerURL(parsing: "http://\(host):8000"), modelID: nil, role: .prefill, bootstrapPort: 9000) }
            for host in ["198.18.0.3", "198.18.0.4"] { _ = try? registry.add(url: try! WorkerURL(parsing: "http://\(host):8000"), modelID: nil, role: .decode) }
        } else {
            for host in ["198.18.0.1", "198.18.0.2"] { _ = try? registry.add(url: try! WorkerURL(parsing: "http://\(host):8000"), modelID: nil) }
        }
        let pools = UpstreamPools(group: upstreamLoop, metrics: upstreamMetrics) { _, loop in
            let channel = EmbeddedChannel(loop: upstreamLoop)
            _ = channel.connect(to: try! SocketAddress(ipAddress: "198.18.0.9", port: 8000))
            upstreamChannels.append(channel)
            return loop.makeSucceededFuture(channel)
        }
        return RouterState(config: config, registry: registry, metrics: upstreamMetrics,
                           logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }), pools: pools, tls: upstreamTLS)
    }

    /// Pieces of real worker answers, so the fuzzer starts from the shapes workers send.
    static let answerPieces: [String] = [
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        "1e\r\ndata: {\"meta_info\":{\"id\":1}}\n\n\r\n",
        "e\r\ndata: [DONE]\n\n\r\n",
        "0\r\n\r\n",
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
        "HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 80\r\n\r\n"
            + #"{"text":"x","meta_info":{"input_token_logprobs":[[-0.5,1,null]],"id":"a"}}      "#,
        "HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\n\r\n{\"e\":\"bad\"}",
        "HTTP/1.1 100 Continue\r\n\r\n",
    ]

    static func upstream(_ bytes: [UInt8]) {
        guard let mode = bytes.first else { return }
        let pd = mode & 1 == 1, stream = mode & 2 != 0, logprobs = mode & 4 != 0, pipelined = mode & 8 != 0
        upstreamChannels = []
        let state = upstreamRouter(pd: pd)
        let body = pd ? #"{"text":"hello","stream":\#(stream),"return_logprob":\#(logprobs)}"#
                      : #"{"model":"m","messages":[{"role":"user","content":"hello"}],"stream":\#(stream)}"#
        let path = pd ? "/generate" : "/v1/chat/completions"
        let request = "POST \(path) HTTP/1.1\r\nhost: r\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)"
        let client = EmbeddedChannel(loop: upstreamLoop)
        try! client.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
        try! client.pipeline.syncOperations.addHandler(RouterHandler(state: state, pool: state.pools.pool(for: upstreamLoop)))
        _ = client.connect(to: try! SocketAddress(ipAddress: "127.0.0.1", port: 1))
        _ = try? client.writeInbound(ByteBuffer(string: pipelined ? request + request : request))
        upstreamLoop.run()

        var clientGone = false
        var i = 1
        func next() -> UInt8? {
            guard i < bytes.count else { return nil }
            defer { i += 1 }
            return bytes[i]
        }
        while let op = next() {
            let channels = upstreamChannels.filter(\.isActive)
            let target = channels.isEmpty ? nil : channels[Int(op >> 3) % channels.count]
            switch op & 7 {
            case 0, 1:  // raw bytes
                let count = Int(next() ?? 0) % 64
                var raw: [UInt8] = []
                for _ in 0..<count { if let b = next() { raw.append(b) } }
                _ = try? target?.writeInbound(ByteBuffer(bytes: raw))
            case 2, 3:  // a piece of a real answer
                let piece = answerPieces[Int(next() ?? 0) % answerPieces.count]
                _ = try? target?.writeInbound(ByteBuffer(string: piece))
            case 4:  // the worker closes the connection
                target?.close(promise: nil)
            case 5:  // time passes: up to past the request deadline
                let step = Int64(next() ?? 0)
                upstreamLoop.advanceTime(by: .milliseconds([1, 10, 100, 1000, 10_000, 40_000][Int(step % 6)] * (1 + step / 6 % 4)))
            case 6:  // the client leaves
                if !clientGone {
                    clientGone = true
                    client.close(promise: nil)
                }
            default:  // what the router wrote is read (and dropped), as a socket would take it
                drain(client)
                for c in channels { drain(c) }
            }
            upstreamLoop.run()
        }
        if verbose {
            var out: [UInt8] = []
            while let b = try? client.readOutbound(as: ByteBuffer.self) { out += b.readableBytesView }
            print(String(decoding: out, as: UTF8.self), terminator: "")
        }
        // Every worker goes away and time runs out: retries that open new connections meet
        // closed ones too, until nothing is left.
        var rounds = 0
        repeat {
            for c in upstreamChannels where c.isActive { c.close(promise: nil) }
            upstreamLoop.advanceTime(by: .seconds(60))
            upstreamLoop.run()
            rounds += 1
        } while upstreamChannels.contains(where: \.isActive) && rounds < 20
        check(!upstreamChannels.contains(where: \.isActive), "the router stops opening connections once every worker fails")
        if !clientGone { client.close(promise: nil) }
        upstreamLoop.run()
        check(state.inFlight == 0, "every request began is ended (\(state.inFlight) left)")
        check(state.admission.inFlight == 0, "every admission slot is released")
        for w in state.registry.all {
            check(w.inFlight == 0, "every attempt's half is ended on its worker (\(w.url.canonical): \(w.inFlight))")
        }
        upstreamChannels = []
    }

    private static func drain(_ channel: EmbeddedChannel) {
        while (try? channel.readOutbound(as: ByteBuffer.self)) != nil {}
        while (try? channel.readOutbound(as: IOData.self)) != nil {}
    }
}
#endif
