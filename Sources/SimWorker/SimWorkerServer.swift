import Foundation
import Primitives
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL

/// A simulated SGLang worker on its own NIO server. Start it in-process (tests, the demo,
/// the benchmark) or through the `smg-sim-worker` executable.
public final class SimWorkerServer: Sendable {
    public let options: SimWorkerOptions
    let state: SimWorkerState
    private let channel: any Channel
    /// The port actually bound (useful with port 0).
    public let port: Int
    public var url: String {
        "\(options.tlsCertificatePath == nil ? "http" : "https")://\(options.host.contains(":") ? "[\(options.host)]" : options.host):\(port)"
    }

    /// A prefill worker's KV bootstrap server.
    private let bootstrap: (any Channel)?
    /// The port of the bootstrap server (prefill workers only).
    public var bootstrapPort: Int? { bootstrap?.localAddress?.port }

    private init(options: SimWorkerOptions, state: SimWorkerState, channel: any Channel, bootstrap: (any Channel)?) {
        self.options = options
        self.state = state
        self.channel = channel
        self.bootstrap = bootstrap
        self.port = channel.localAddress?.port ?? options.port
    }

    public static func start(_ options: SimWorkerOptions, group: any EventLoopGroup) async throws -> SimWorkerServer {
        let state = SimWorkerState(options: options)
        let tls = try tlsContext(options)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    guard options.http2 else { return try http1(channel, state: state) }
                    // HTTP/2 is told from HTTP/1.1 by the first bytes (ALPN's choice comes in the
                    // same bytes: a client that chose h2 starts with the preface).
                    try channel.pipeline.syncOperations.addHandler(HTTP2PrefaceSniffer(
                        http1: { try http1($0, state: state) }, http2: { try http2($0, state: state) }))
                }
            }
            .bind(host: options.host, port: options.port).get()
        let bootstrap = options.role == .prefill
            ? try await SimBootstrap.listen(host: options.host, port: options.bootstrapPort, state: state, group: group) : nil
        return SimWorkerServer(options: options, state: state, channel: channel, bootstrap: bootstrap)
    }

    static func http1(_ channel: any Channel, state: SimWorkerState) throws {
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
        try channel.pipeline.syncOperations.addHandler(SimWorkerHandler(state: state))
    }

    /// One HTTP/2 connection: each stream gets the HTTP/1 handler, as a connection of its own.
    static func http2(_ channel: any Channel, state: SimWorkerState) throws {
        state.update { $0.http2Connections += 1; $0.openHTTP2Connections += 1 }
        channel.closeFuture.whenComplete { _ in state.update { $0.openHTTP2Connections -= 1 } }
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = [HTTP2Setting(parameter: .maxConcurrentStreams, value: state.options.http2MaxStreams),
                                      HTTP2Setting(parameter: .maxHeaderListSize, value: 1 << 16)]
        _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: connection, streamConfiguration: .init()) { stream in
            stream.eventLoop.makeCompletedFuture {
                state.update { $0.http2Streams += 1 }
                try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                try stream.pipeline.syncOperations.addHandler(SimWorkerHandler(state: state))
            }
        }
    }

    /// The HTTPS context, when `--tls-cert` and `--tls-key` are given; with `--tls-client-ca`,
    /// a client certificate from that CA is required.
    static func tlsContext(_ options: SimWorkerOptions) throws -> NIOSSLContext? {
        guard let cert = options.tlsCertificatePath, let key = options.tlsKeyPath else { return nil }
        let chain = try NIOSSLCertificate.fromPEMFile(cert).map { NIOSSLCertificateSource.certificate($0) }
        let privateKey = NIOSSLPrivateKeySource.privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
        var configuration: TLSConfiguration
        if let ca = options.tlsClientCAPath {
            configuration = .makeServerConfigurationWithMTLS(certificateChain: chain, privateKey: privateKey,
                                                             trustRoots: .certificates(try NIOSSLCertificate.fromPEMFile(ca)))
        } else {
            configuration = .makeServerConfiguration(certificateChain: chain, privateKey: privateKey)
        }
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = options.http2 ? ["h2", "http/1.1"] : ["http/1.1"]
        return try NIOSSLContext(configuration: configuration)
    }

    /// Requests served, streams the client abandoned, and connections open right now.
    public var stats: (requests: Int, abortedStreams: Int, openConnections: Int, healthChecks: Int) {
        let s = state.snapshot
        return (s.requests, s.abortedStreams, s.openConnections, s.healthChecks)
    }

    public func close() async {
        try? await bootstrap?.close()
        try? await channel.close()
    }
}

/// One connection to the simulated worker. Requests are answered in order (NIO's pipelining
/// helper holds back the next request until this one's response has ended).
final class SimWorkerHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let state: SimWorkerState
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()
    /// Set while a response is being produced over several event-loop turns.
    private var streaming = false
    private(set) var active = true
    /// The `x-request-id` the router forwarded, echoed back as `x-upstream-request-id`.
    private var forwardedRequestID: String?
    /// What the worker was asked, as `x-sim-prompt: <characters>:<FNV-1a hex>` of the prompt it
    /// read (every message's text for chat): tests tell from it whether history reached the worker.
    private var promptDigest: String?
    /// The Authorization header received, echoed as `x-sim-authorization` (tests check API keys).
    private var receivedAuthorization: String?
    /// PD: the bootstrap room served and, on a decode worker, the prefill that had it; the
    /// data-parallel rank asked for.
    private var echoHeaders: [(String, String)] = []

    init(state: SimWorkerState) { self.state = state }

    /// Counted once in `openConnections` (a handler added to a channel already active, as after
    /// the HTTP/2 sniffer, sees no channelActive).
    private var counted = false

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { countOpen() }
    }

    func channelActive(context: ChannelHandlerContext) {
        countOpen()
        context.fireChannelActive()
    }

    private func countOpen() {
        guard !counted else { return }
        counted = true
        state.update { $0.openConnections += 1 }
    }

    func channelInactive(context: ChannelHandlerContext) {
        active = false
        state.update { c in
            if counted { c.openConnections -= 1 }
            if streaming { c.abortedStreams += 1; c.active -= 1 }
        }
        streaming = false
        leaveBatch()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            forwardedRequestID = h.headers.first(name: "x-request-id")
            promptDigest = nil
            echoHeaders = []
            receivedAuthorization = h.headers.first(name: "authorization")
            body.clear()
        case .body(var chunk):
            body.writeBuffer(&chunk)
        case .end:
            guard let h = head else { return }
            head = nil
            handle(context: context, head: h)
        }
    }

    private func handle(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let options = state.options
        switch (head.method, path) {
        case (.GET, "/health"), (.GET, "/health_generate"):
            state.update { $0.healthChecks += 1 }
            guard !state.engineReport.healthStalled else { return }  // a probe that never gets an answer
            respond(context, head, status: .ok, body: "", contentType: "text/plain")
        case (.GET, "/v1/models"):
            respond(context, head, status: .ok, body: #"{"object":"list","data":[{"id":\#(SimResponses.quote(options.modelID)),"object":"model","created":0,"owned_by":"sglang","root":\#(SimResponses.quote(options.modelID))}]}"#)
        case (.GET, "/get_model_info"):
            respond(context, head, status: .ok, body: #"{"model_path":\#(SimResponses.quote(options.modelID)),"tokenizer_path":\#(SimResponses.quote(options.modelID)),"is_generation":true}"#)
        case (.GET, "/get_server_info"):
            respond(context, head, status: .ok, body: #"{"model_path":\#(SimResponses.quote(options.modelID)),"served_model_name":\#(SimResponses.quote(options.modelID)),"tp_size":1,"dp_size":\#(options.dpSize),"version":"sim","worker_name":\#(SimResponses.quote(options.workerName))}"#)
        case (.GET, "/get_load"):
            guard !state.engineReport.loadsStalled else { return }
            let active = state.snapshot.active + options.extraReportedLoad
            respond(context, head, status: .ok, body: #"{"load":\#(active),"num_reqs":\#(active),"num_waiting_reqs":\#(state.engineReport.waiting)}"#)
        case (.GET, "/v1/loads"):
            // A stalled load endpoint never answers: the connection stays busy until the caller gives up.
            guard !state.engineReport.loadsStalled else { return }
            // With --max-running the queue behind the batch is waiting, and the batch's fill its KV usage.
            var engine = state.engineReport
            engine.waiting += state.queued
            if options.maxRunning > 0 { engine.tokenUsage = max(engine.tokenUsage, min(1, Double(state.snapshot.active) / Double(options.maxRunning))) }
            respond(context, head, status: .ok, body: SimResponses.loads(running: state.snapshot.active + options.extraReportedLoad, engine: engine, options: options))
        case (.POST, "/flush_cache"), (.GET, "/flush_cache"):
            state.flushCache()
            respond(context, head, status: .ok, body: "Cache flushed.\n", contentType: "text/plain")
        case (.POST, "/sim/config"):
            // Tests change the worker at run time: ?failure_rate=0&hang_rate=0&drop_rate=0&cut_rate=0
            // (fractions), waiting=N and token_usage=X (what /v1/loads reports), loads=stall|answer,
            // health=stall|answer (the probes), slowdown=X (time to the first token and between tokens, times X).
            let query = head.uri.split(separator: "?", maxSplits: 1).dropFirst().first.map {
                $0.split(separator: "&").map { $0.split(separator: "=", maxSplits: 1) }.filter { $0.count == 2 }
            } ?? []
            func value(_ name: String) -> Substring? { query.first { $0[0] == name }?[1] }
            func rate(_ name: String) -> Double? { value(name).flatMap { Double($0) }.flatMap { (0...1).contains($0) ? $0 : nil } }
            state.setFaultRates(failure: rate("failure_rate"), hang: rate("hang_rate"), drop: rate("drop_rate"), cut: rate("cut_rate"))
            state.changeEngineReport { e in
                if let n = value("waiting").flatMap({ Int($0) }), n >= 0 { e.waiting = n }
                if let u = rate("token_usage") { e.tokenUsage = u }
                if let l = value("loads") { e.loadsStalled = l == "stall" }
                if let h = value("health") { e.healthStalled = h == "stall" }
                if let x = value("slowdown").flatMap({ Double($0) }), x.isFinite, x > 0, x <= 1000 { e.slowdown = x }
            }
            let f = state.faultRates, e = state.engineReport
            respond(context, head, status: .ok, body: #"{"failure_rate":\#(f.failure),"hang_rate":\#(f.hang),"drop_rate":\#(f.drop),"cut_rate":\#(f.cut),"waiting":\#(e.waiting),"token_usage":\#(e.tokenUsage),"loads_stalled":\#(e.loadsStalled),"health_stalled":\#(e.healthStalled),"slowdown":\#(e.slowdown)}"#)
        case (.GET, "/sim/stats"):
            let s = state.snapshot
            respond(context, head, status: .ok, body: #"{"requests":\#(s.requests),"active":\#(s.active),"peak_active":\#(s.peakActive),"completed":\#(s.completed),"aborted_streams":\#(s.abortedStreams),"open_connections":\#(s.openConnections),"http2_connections":\#(s.http2Connections),"open_http2_connections":\#(s.openHTTP2Connections),"http2_streams":\#(s.http2Streams),"failures_injected":\#(s.failuresInjected),"prompt_tokens":\#(s.promptTokens),"cached_tokens":\#(s.cachedTokens),"health_checks":\#(s.healthChecks),"queued":\#(state.queued)}"#)
        case (.POST, "/v1/chat/completions"): infer(context, head, .chat)
        case (.POST, "/v1/completions"): infer(context, head, .completion)
        case (.POST, "/generate"): infer(context, head, .generate)
        case (.POST, "/v1/embeddings"): infer(context, head, .embeddings)
        case (.POST, "/v1/rerank"), (.POST, "/rerank"): infer(context, head, .rerank)
        case (.POST, "/v1/classify"): infer(context, head, .classify)
        default:
            respond(context, head, status: .notFound, body: SimResponses.error("no route \(head.method) \(path)", status: 404))
        }
    }

    private func infer(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, _ kind: SimRequest.Kind) {
        let options = state.options
        state.update { $0.requests += 1 }
        let bytes = body.readableBytesView
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)), let json = object as? [String: Any] else {
            respond(context, head, status: .badRequest, body: SimResponses.error("request body is not a JSON object", status: 400))
            return
        }
        // Failure injection, in a fixed order so one seeded draw decides the outcome.
        let draw = state.draw()
        let faults = state.faultRates
        if draw < faults.drop {
            state.update { $0.failuresInjected += 1 }
            context.close(promise: nil)
            return
        }
        if draw < faults.drop + faults.hang {
            state.update { $0.failuresInjected += 1 }
            return  // never answered; the connection stays open until the client gives up
        }
        if draw < faults.drop + faults.hang + faults.failure {
            state.update { $0.failuresInjected += 1 }
            respond(context, head, status: .internalServerError, body: SimResponses.error("injected failure", status: 500))
            return
        }
        if let mode = options.misbehave { return misbehave(mode, context, head, stream: json["stream"] as? Bool == true) }
        var request = SimRequest(kind: kind, json: json, maxOutputTokens: options.maxOutputTokens, defaultOutputTokens: options.defaultOutputTokens)
        request.promptLogprobs = options.role != .decode
        if draw < faults.drop + faults.hang + faults.failure + faults.cut {
            state.update { $0.failuresInjected += 1 }
            return cutShort(context, head, request)
        }
        // The rank to run on: `routed_dp_rank` (newer SGLang), else `data_parallel_rank`.
        var servingRank: Int?
        for field in ["routed_dp_rank", "data_parallel_rank"] {
            guard servingRank == nil, let rank = json[field] else { continue }
            guard let r = rank as? Int, (0..<options.dpSize).contains(r) else {
                return respond(context, head, status: .badRequest, body: SimResponses.error(
                    "\(field) \(rank) is not a rank of this worker (dp_size \(options.dpSize))", status: 400))
            }
            servingRank = r
            echoHeaders.append(("x-sim-dp-rank", String(r)))
        }
        let prefillRank = json["disagg_prefill_dp_rank"] as? Int
        switch options.role {
        case .regular:
            generate(context, head, request)
        case .prefill:
            guard let rooms = SimBootstrap.rooms(json) else {
                return respond(context, head, status: .badRequest, body: SimResponses.error(
                    "a prefill worker needs bootstrap_room (requests reach it through a PD router)", status: 400))
            }
            state.addRooms(rooms, rank: servingRank)
            echoHeaders.append(("x-sim-bootstrap-room", rooms.map(String.init).joined(separator: ",")))
            generate(context, head, request)
        case .decode:
            guard let targets = SimBootstrap.targets(json) else {
                return respond(context, head, status: .badRequest, body: SimResponses.error(
                    "a decode worker needs bootstrap_host, bootstrap_port and bootstrap_room (requests reach it through a PD router)", status: 400))
            }
            // The KV cache comes from the prefill: generate only once it has every room.
            let loop = context.eventLoop
            EventLoopFuture.whenAllSucceed(targets.map { SimBootstrap.ask($0, on: loop) }, on: loop).assumeIsolated().whenComplete { result in
                guard self.active else { return }
                switch result {
                case .success(let prefills):
                    // The KV cache is read from the rank that computed it: told wrong, the transfer fails.
                    if let expected = prefillRank, let wrong = prefills.first(where: { $0.rank != expected }) {
                        return self.respond(context, head, status: .internalServerError, body: SimResponses.error(
                            "KV transfer failed: disagg_prefill_dp_rank \(expected) but rank \(wrong.rank) of \(wrong.name) computed the room", status: 500))
                    }
                    self.echoHeaders += [("x-sim-bootstrap-room", targets.map { String($0.room) }.joined(separator: ",")),
                                         ("x-sim-prefill", Set(prefills.map(\.name)).sorted().joined(separator: ","))]
                    if let r = prefillRank { self.echoHeaders.append(("x-sim-prefill-dp-rank", String(r))) }
                    self.generate(context, head, request)
                case .failure:
                    let t = targets[0]
                    self.respond(context, head, status: .internalServerError, body: SimResponses.error(
                        "KV transfer failed: the prefill at \(t.host):\(t.port.map(String.init) ?? "none") never received bootstrap_room \(t.room)", status: 500))
                }
            }
        }
    }

    /// Holds a place in the engine's batch (`--max-running`) while generating.
    private var inBatch = false

    /// Generates once the engine's batch has a place (at once without `--max-running`).
    private func generate(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, _ request: SimRequest) {
        let bound = NIOLoopBound((self, context, head, request), eventLoop: context.eventLoop)
        state.admit(on: context.eventLoop) {
            let (handler, context, head, request) = bound.value
            guard handler.active else { return handler.state.leaveBatch() }
            handler.inBatch = true
            handler.run(context, head, request)
        }
    }

    private func leaveBatch() {
        guard inBatch else { return }
        inBatch = false
        state.leaveBatch()
    }

    private func run(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, _ request: SimRequest) {
        let options = state.options
        let slowdown = state.engineReport.slowdown
        let promptText = String(decoding: request.prompt, as: UTF8.self)
        promptDigest = "\(promptText.count):\(String(FNV1a.hash(promptText), radix: 16))"
        let cached = state.cachedPrefix(of: request.prompt)
        let id = "sim-\(options.workerName)-\(state.nextID())"
        let model = request.model ?? options.modelID
        let created = Int(Date().timeIntervalSince1970)
        state.update { c in
            c.active += 1
            c.peakActive = max(c.peakActive, c.active)
            c.promptTokens += request.prompt.count
            c.cachedTokens += cached
        }
        streaming = true
        let loop = context.eventLoop.assumeIsolated()
        let ttft = TimeAmount.milliseconds(Int64(Double(options.timeToFirstTokenMs) * slowdown))
        if !request.stream {
            let total = ttft + (options.tokensPerSecond > 0 ? .nanoseconds(Int64(Double(request.outputTokens) / options.tokensPerSecond * 1e9 * slowdown)) : .zero)
            let send = { [self] in
                guard active else { return }
                finish()
                respond(context, head, status: .ok, body: SimResponses.complete(request, id: id, model: model, cached: cached, created: created))
            }
            if total > .zero { loop.scheduleTask(in: total, send) } else { send() }
            return
        }
        var h = HTTPHeaders()
        h.add(name: "content-type", value: "text/event-stream")
        h.add(name: "cache-control", value: "no-cache")
        addEchoes(to: &h)
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: h))), promise: nil)
        let gap: TimeAmount = options.tokensPerSecond > 0 ? .nanoseconds(Int64(1e9 / options.tokensPerSecond * slowdown)) : .zero
        func emit(_ i: Int) {
            guard active else { return }
            if i < request.outputTokens {
                write(context, SimResponses.streamEvent(request, id: id, model: model, index: i, cached: cached, created: created))
                if gap > .zero { loop.scheduleTask(in: gap) { emit(i + 1) } } else { emit(i + 1) }
            } else {
                write(context, SimResponses.streamEnd(request, id: id, model: model, cached: cached, created: created))
                finish()
                end(context, head)
            }
        }
        if ttft > .zero { loop.scheduleTask(in: ttft) { emit(0) } } else { emit(0) }
    }

    /// The answer starts (head and part of the body: a JSON answer's first half, or a stream's
    /// first event) and then the connection closes, as when a worker dies mid-answer.
    private func cutShort(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, _ request: SimRequest) {
        let model = request.model ?? state.options.modelID
        var h = HTTPHeaders()
        let part: String
        if request.stream {
            h.add(name: "content-type", value: "text/event-stream")
            part = SimResponses.streamEvent(request, id: "sim-cut", model: model, index: 0, cached: 0, created: 0)
        } else {
            let body = SimResponses.complete(request, id: "sim-cut", model: model, cached: 0, created: 0)
            h.add(name: "content-type", value: "application/json")
            h.add(name: "content-length", value: String(body.utf8.count))
            part = String(body.prefix(body.count / 2))
        }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: h))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: part))))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    private func finish() {
        streaming = false
        state.update { c in c.active -= 1; c.completed += 1 }
        leaveBatch()
    }

    func write(_ context: ChannelHandlerContext, _ text: String) {
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: text)))), promise: nil)
    }

    private func end(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        let keepAlive = head.isKeepAlive
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }

    /// What every answer tells the caller about how it was served: which worker, the prompt it
    /// read, the request id and Authorization it received, and the PD/DP fields it acted on.
    private func addEchoes(to h: inout HTTPHeaders) {
        h.add(name: "x-sim-worker", value: state.options.workerName)
        if let digest = promptDigest { h.add(name: "x-sim-prompt", value: digest) }
        if let id = forwardedRequestID { h.add(name: "x-upstream-request-id", value: id) }
        if let auth = receivedAuthorization { h.add(name: "x-sim-authorization", value: auth) }
        for (name, value) in echoHeaders { h.add(name: name, value: value) }
    }

    private func respond(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, status: HTTPResponseStatus, body: String, contentType: String = "application/json") {
        var h = HTTPHeaders()
        h.add(name: "content-type", value: contentType)
        h.add(name: "content-length", value: String(body.utf8.count))
        addEchoes(to: &h)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: h))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        end(context, head)
    }
}
