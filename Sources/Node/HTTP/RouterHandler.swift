import NIOCore
import NIOHTTP1
import Policies
import Reliability

/// One client connection to the router: reads a request, answers control routes itself and
/// relays inference requests to a worker over this event loop's upstream pool.
///
/// The handler is also the delegate of the upstream connection it is using, so response parts
/// go from the worker socket to the client socket without leaving the event loop. NIO's
/// pipelining helper in front of it delivers one request at a time.
final class RouterHandler: ChannelInboundHandler, UpstreamResponseDelegate {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: RouterState
    private let pool: UpstreamPool
    private var context: ChannelHandlerContext?
    private var rng: SplitMix64

    // The request being served.
    private enum Phase { case idle, readingBody, refused, dispatched }
    private var phase = Phase.idle
    private var head: HTTPRequestHead?
    private var route = Route.notFound
    private var body = ByteBuffer()
    private var started = NIODeadline.now()
    private var requestID = ""
    private var keepAlive = true
    /// Bumped per request, so a late callback from an earlier request is recognised and ignored.
    private var generation = 0

    // The exchange with workers: one request, one or more attempts.
    private var worker: Worker?
    private var upstream: PooledConnection?
    private var upstreamBody = ByteBuffer()
    private var upstreamHead: HTTPRequestHead?
    private var responseStarted = false
    private var retriedStaleConnection = false
    /// The current attempt's `--request-timeout-secs` timer.
    private var timeout: Scheduled<Void>?
    private var endpoint = ""
    /// What the policy routes on, kept for every attempt.
    private var routing = RoutingRequest()
    private var model: String?
    private var stream = false
    /// Retries made so far for this request, and the workers that failed it.
    private var retries = 0
    private var failedWorkers: Set<String> = []
    private var retryTask: Scheduled<Void>?
    /// Whether the current attempt's outcome still has to reach the worker's circuit breaker.
    private var attemptOpen = false
    /// Holding an admission slot (released exactly once), or waiting in the queue.
    private var admitted = false
    private var admissionTicket: UInt64?

    init(state: RouterState, pool: UpstreamPool) {
        self.state = state
        self.pool = pool
        var g = SystemRandomNumberGenerator()
        self.rng = SplitMix64(seed: g.next())
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    // MARK: reading the request

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): begin(h)
        case .body(var chunk):
            guard phase == .readingBody else { return }
            if body.readableBytes + chunk.readableBytes > state.config.maxPayloadSize {
                refuse(APIError.payloadTooLarge(state.config.maxPayloadSize))
                return
            }
            body.writeBuffer(&chunk)
        case .end:
            guard phase == .readingBody else { return }
            phase = .dispatched
            dispatch()
        }
    }

    private func begin(_ h: HTTPRequestHead) {
        generation &+= 1
        head = h
        started = .now()
        state.requestBegan()
        requestID = state.requestIDs.id(for: h.headers)
        keepAlive = h.isKeepAlive
        route = Route.resolve(h.method, RequestTarget(h.uri).path)
        body.clear()
        phase = .readingBody
        // Refuse an announced oversized body before reading any of it.
        if let length = h.headers.first(name: "content-length").flatMap({ Int($0) }), length > state.config.maxPayloadSize {
            refuse(APIError.payloadTooLarge(state.config.maxPayloadSize))
            return
        }
        // curl and others wait (curl: one second) for "100 Continue" before sending a body
        // over 1 KiB; say it at once, since the body is acceptable so far.
        if let expect = h.headers.first(name: "expect"), Self.nameEquals(expect, "100-continue"), let context {
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: .continue))), promise: nil)
        }
    }

    /// Answers now and closes the connection: the rest of the body is never read.
    private func refuse(_ error: APIError) {
        phase = .refused
        keepAlive = false
        body.clear()
        respond(error: error)
    }

    // MARK: dispatch

    private func dispatch() {
        guard let head else { return }
        let target = RequestTarget(head.uri)
        switch route {
        case .inference(let kind): routeInference(kind, head: head)
        case .proxyToAnyWorker: proxyToAnyWorker(head: head, path: target.path)
        case .health: respond(.ok, json: #"{"status":"ok"}"#)
        case .readiness: readiness()
        case .meshStatus:
            if let mesh = state.mesh { respond(.ok, json: ControlAPI.meshStatus(mesh)) } else {
                respond(error: APIError(.notFound, type: "not_found_error", code: "mesh_disabled", "the mesh is off: start smg with --enable-mesh"))
            }
        case .models: respond(.ok, json: ControlAPI.models(state.registry))
        case .getLoads: fanOut(method: .GET, path: "/get_load") { ControlAPI.loads($0) }
        case .flushCache: fanOut(method: .POST, path: "/flush_cache") { ControlAPI.flushed($0) }
        case .corsPreflight:
            respond(.noContent, body: "", contentType: nil, extra: state.cors.preflightHeaders(head.headers))
        case .methodNotAllowed: respond(error: .methodNotAllowed(head.method, String(target.path)))
        case .notFound: respond(error: .routeNotFound(head.method, String(target.path)))
        case .listWorkers, .addWorker, .getWorker, .deleteWorker, .updateWorker, .legacyAddWorker, .legacyRemoveWorker, .legacyListWorkers:
            let answer = ControlAPI.workers(route, target: target, body: body, state: state)
            var extra = HTTPHeaders()
            if let location = answer.location { extra.add(name: "location", value: location) }
            if let error = answer.error { respond(error: error) } else { respond(answer.status, json: answer.body, extra: extra) }
        }
    }

    private func readiness() {
        let workers = state.registry.all
        let healthy = workers.filter(\.isAvailable).count
        if state.isDraining {
            respond(.serviceUnavailable, json: #"{"status":"not_ready","reason":"shutting_down","healthy_workers":\#(healthy),"total_workers":\#(workers.count)}"#)
        } else if healthy == 0 {
            respond(.serviceUnavailable, json: #"{"status":"not_ready","reason":"no_healthy_workers","healthy_workers":0,"total_workers":\#(workers.count)}"#)
        } else {
            respond(.ok, json: #"{"status":"ready","healthy_workers":\#(healthy),"total_workers":\#(workers.count)}"#)
        }
    }

    private func routeInference(_ kind: Route.Inference, head: HTTPRequestHead) {
        endpoint = kind.endpoint
        if let key = state.config.apiKey, head.headers.first(name: "authorization") != "Bearer " + key {
            respond(error: .unauthorized)
            return
        }
        // Validate the JSON and read the few fields routing needs.
        var model: String?
        var stream = false
        var routingText: [UInt8] = []
        let wantsText = state.policyUsesText
        let failure: JSONScanner.Failure? = body.withUnsafeReadableBytes { bytes -> JSONScanner.Failure? in
            do throws(JSONScanner.Failure) {
                let members = try JSONScanner.scanObject(bytes)
                for m in members {
                    if m.keyEquals("model", in: bytes) { model = m.stringValue(in: bytes) }
                    else if m.keyEquals("stream", in: bytes) { stream = m.boolValue(in: bytes) ?? false }
                }
                if wantsText { routingText = RoutingText.extract(kind, members: members, bytes: bytes) }
                return nil
            } catch let failure {
                return failure
            }
        }
        if let failure {
            state.metrics.routerError(endpoint: endpoint, code: "invalid_json")
            respond(error: .invalidJSON(failure.description))
            return
        }
        self.model = model?.isEmpty == true ? nil : model
        self.stream = stream
        routing = RoutingRequest(
            routingText: routingText,
            routingKey: head.headers.first(name: "x-smg-routing-key"),
            targetWorker: head.headers.first(name: "x-smg-target-worker").flatMap { Int($0) })
        admitThenRoute()
    }

    private func proxyToAnyWorker(head: HTTPRequestHead, path: Substring) {
        endpoint = String(path.dropFirst())
        model = nil
        routing = RoutingRequest()
        body.clear()
        startAttempt()
    }

    /// Waits for an admission slot when `--max-concurrent-requests` or a rate limit is set.
    private func admitThenRoute() {
        guard state.admission.config.isActive, let context else { return startAttempt() }
        let me = NIOLoopBound(self, eventLoop: context.eventLoop)
        let gen = generation
        admissionTicket = state.admission.admit(on: context.eventLoop) { result in
            let handler = me.value
            guard handler.generation == gen, handler.phase == .dispatched else {
                // The client left while this request waited: give the slot straight back.
                if case .admitted = result { handler.state.admission.release() }
                return
            }
            handler.admissionTicket = nil
            switch result {
            case .admitted:
                handler.admitted = true
                handler.startAttempt()
            case .queueFull:
                var extra = HTTPHeaders()
                extra.add(name: "retry-after", value: String(handler.state.admission.retryAfterSeconds))
                handler.state.metrics.routerError(endpoint: handler.endpoint, code: "rate_limited")
                handler.respond(error: .rateLimited, extra: extra)
            case .timedOut:
                handler.state.metrics.routerError(endpoint: handler.endpoint, code: "queue_timeout")
                handler.respond(error: .queueTimeout(handler.state.config.admission.queueTimeoutMs / 1000))
            }
        }
    }

    /// Chooses a worker (avoiding those that already failed this request) and sends to it.
    private func startAttempt() {
        guard let head else { return }
        routing.now = state.nowMs()
        switch state.registry.select(model: model, request: routing, avoiding: failedWorkers, using: &rng) {
        case .unknownModel:
            state.metrics.routerError(endpoint: endpoint, code: "model_not_found")
            respond(error: .modelNotFound(model ?? ""))
        case .noneAvailable:
            state.metrics.routerError(endpoint: endpoint, code: "no_available_workers")
            respond(error: .noWorkers(model))
        case .worker(let w, let reason):
            if retries == 0, case .inference = route {
                state.metrics.routed(model: model ?? "default", endpoint: endpoint, streaming: stream, worker: w.url.canonical,
                                     policy: state.config.policy.rawValue, reason: reason.rawValue)
                state.treeSync?.noteDecision()
                if state.mesh != nil, reason == .newAssignment || reason == .reassigned, let key = routing.routingKey {
                    MeshBridge.assigned(routingKey: key, model: model, worker: w, state: state)
                }
            }
            _ = w.breakerAcquire(now: routing.now)
            attemptOpen = true
            proxy(to: w, head: head, body: body)
        }
    }

    // MARK: proxying

    /// Headers that describe one hop, not the message: never forwarded as they are.
    /// `expect` too: the router sends the worker the whole body at once.
    private static let hopByHop: [String] = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length", "expect"]

    /// ASCII case-insensitive equality against a lowercase literal, without allocating.
    static func nameEquals(_ name: String, _ lower: String) -> Bool {
        guard name.utf8.count == lower.utf8.count else { return false }
        for (b, c) in zip(name.utf8, lower.utf8) where (b >= 65 && b <= 90 ? b | 0x20 : b) != c { return false }
        return true
    }

    private static func isHopByHop(_ name: String, orRequestID: Bool = false) -> Bool {
        if orRequestID, nameEquals(name, "x-request-id") { return true }
        return hopByHop.contains { nameEquals(name, $0) }
    }

    private static func isContentLength(_ name: String) -> Bool { nameEquals(name, "content-length") }

    private func proxy(to w: Worker, head: HTTPRequestHead, body: ByteBuffer) {
        worker = w
        w.requestStarted()
        responseStarted = false
        retriedStaleConnection = false
        let bearer = w.apiKey ?? state.config.apiKey
        var headers = HTTPHeaders()
        headers.reserveCapacity(head.headers.count + 4)
        for (name, value) in head.headers where !Self.isHopByHop(name, orRequestID: true) {
            if bearer != nil, Self.nameEquals(name, "authorization") { continue }
            headers.add(name: name, value: value)
        }
        headers.add(name: "host", value: w.url.hostHeader)
        headers.add(name: "content-length", value: String(body.readableBytes))
        headers.add(name: "x-request-id", value: requestID)
        if let bearer { headers.add(name: "authorization", value: "Bearer " + bearer) }
        upstreamHead = HTTPRequestHead(version: .http1_1, method: head.method, uri: head.uri, headers: headers)
        upstreamBody = body
        let gen = generation
        timeout = pool.loop.assumeIsolated().scheduleTask(in: .seconds(Int64(state.config.requestTimeoutSecs))) { [weak self] in
            guard let self, self.generation == gen else { return }
            self.upstreamTimedOut()
        }
        sendUpstream()
    }

    private func sendUpstream() {
        guard let w = worker else { return }
        let gen = generation
        pool.acquire(w.url) { [weak self] result in
            guard let self, self.generation == gen, self.worker === w, self.context != nil else {
                if case .success(let c) = result { c.channel.close(promise: nil) }
                return
            }
            switch result {
            case .failure:
                self.attemptFailed(.transportError)
            case .success(let c):
                self.upstream = c
                c.handler.delegate = self
                guard let head = self.upstreamHead else { return }
                c.channel.write(HTTPClientRequestPart.head(head), promise: nil)
                if self.upstreamBody.readableBytes > 0 {
                    c.channel.write(HTTPClientRequestPart.body(.byteBuffer(self.upstreamBody)), promise: nil)
                }
                c.channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            }
        }
    }

    func upstreamHead(_ response: HTTPResponseHead) {
        guard let context else { return }
        let code = Int(response.status.code)
        if RetryPlan.isRetryable(.status(code)) {
            switch RetryPlan.decide(retriesSoFar: retries, outcome: .status(code), responseStarted: responseStarted, config: state.config.retry, using: &rng) {
            case .retry(let delayMs):
                // Not forwarded: drop this answer and its connection, try another worker.
                recordAttempt(success: code < 500)
                dropUpstream()
                scheduleRetry(afterMs: delayMs)
                return
            case .giveUp(.exhausted):
                state.metrics.retriesExhausted(endpoint: endpoint)
            case .giveUp:
                break
            }
        }
        responseStarted = true
        var headers = HTTPHeaders()
        headers.reserveCapacity(response.headers.count + 4)
        for (name, value) in response.headers where !Self.isHopByHop(name) || Self.isContentLength(name) {
            headers.add(name: name, value: value)
        }
        decorate(&headers)
        let out = HTTPResponseHead(version: head?.version ?? .http1_1, status: response.status, headers: headers)
        status = code
        context.write(wrapOutboundOut(.head(out)), promise: nil)
    }

    func upstreamBody(_ buffer: ByteBuffer) {
        context?.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    func upstreamReadComplete() {
        context?.flush()
    }

    func upstreamEnd(reusable: Bool) {
        guard let c = upstream else { return }
        upstream = nil
        if reusable { pool.release(c) } else { c.channel.close(promise: nil) }
        recordAttempt(success: status < 500)
        endExchange()
        finishResponse()
    }

    func upstreamFailed(_ error: any Error) {
        let wasReused = upstream?.handler.reused ?? false
        upstream = nil
        if !responseStarted, wasReused, !retriedStaleConnection, case UpstreamError.closedBeforeResponse = error {
            // A keep-alive connection the worker had already closed: the request never reached
            // it, so sending it again on a fresh connection is safe (and no worker failure).
            retriedStaleConnection = true
            sendUpstream()
            return
        }
        attemptFailed(.transportError)
    }

    private func upstreamTimedOut() {
        dropUpstream()
        attemptFailed(.timeout)
    }

    /// An attempt ended without a usable answer: retry elsewhere if the plan says so, else
    /// tell the client.
    private func attemptFailed(_ outcome: AttemptOutcome) {
        recordAttempt(success: false)
        let decision = RetryPlan.decide(retriesSoFar: retries, outcome: outcome, responseStarted: responseStarted, config: state.config.retry, using: &rng)
        if case .retry(let delayMs) = decision {
            scheduleRetry(afterMs: delayMs)
            return
        }
        if case .giveUp(.exhausted) = decision { state.metrics.retriesExhausted(endpoint: endpoint) }
        abortExchange(outcome == .timeout ? .upstreamTimeout(state.config.requestTimeoutSecs) : .upstreamFailed("worker \(worker?.url.canonical ?? "?") failed"))
    }

    private func dropUpstream() {
        if let c = upstream {
            c.handler.delegate = nil
            c.channel.close(promise: nil)
            upstream = nil
        }
    }

    /// Tells the worker's circuit breaker how the current attempt ended, once.
    private func recordAttempt(success: Bool) {
        guard attemptOpen, let w = worker else { return }
        attemptOpen = false
        if let change = w.breakerRecord(success: success, now: state.nowMs()) {
            state.metrics.breakerTransition(worker: w.url.canonical, to: change.rawValue)
            state.logger.warning("circuit breaker \(change.rawValue)", metadata: ["worker": "\(w.url.canonical)"])
        }
    }

    private func scheduleRetry(afterMs delayMs: Int) {
        guard let w = worker else { return }
        failedWorkers.insert(w.id)
        state.metrics.retry(endpoint: endpoint, worker: w.url.canonical, delayMs: delayMs)
        endAttempt()
        retries += 1
        let gen = generation
        retryTask = pool.loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delayMs))) { [weak self] in
            guard let self, self.generation == gen, self.phase == .dispatched else { return }
            self.retryTask = nil
            self.startAttempt()
        }
    }

    /// Ends an exchange that went wrong. Before the response head the client gets `error`;
    /// once part of the answer is out, closing the connection is the only honest signal left.
    private func abortExchange(_ error: APIError) {
        guard responseStarted else { return failExchange(error) }
        endExchange()
        keepAlive = false
        status = Int(error.status.code)
        context?.close(promise: nil)
    }

    private func failExchange(_ error: APIError) {
        endExchange()
        state.metrics.routerError(endpoint: endpoint, code: error.code)
        respond(error: error)
    }

    /// Ends the current attempt: its timer and the worker's in-flight count.
    private func endAttempt() {
        timeout?.cancel()
        timeout = nil
        worker?.requestFinished()
        worker = nil
    }

    /// Ends the worker side of the request exactly once.
    private func endExchange() {
        endAttempt()
        retryTask?.cancel()
        retryTask = nil
        upstreamHead = nil
        upstreamBody = ByteBuffer()
    }

    /// Backpressure: while the client cannot take more bytes, stop reading from the worker, so
    /// a slow client never makes the router buffer a whole large response.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        upstream?.channel.setOption(ChannelOptions.autoRead, value: context.channel.isWritable).whenFailure { _ in }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The client went away: an abandoned generation costs GPU time, so drop the worker's
        // connection at once instead of reading the rest of the answer.
        dropUpstream()
        if worker != nil { recordAttempt(success: true) }
        endExchange()
        if let ticket = admissionTicket {
            state.admission.cancel(ticket)
            admissionTicket = nil
        }
        if phase != .idle {
            status = 499  // client closed request (nginx's convention)
            completeRequest()
        }
        context.fireChannelInactive()
    }

    // MARK: control-path fan-out

    private func fanOut(method: HTTPMethod, path: String, render: @escaping ([(Worker, UpstreamFetch.Response?)]) -> (HTTPResponseStatus, String)) {
        let workers = state.registry.all
        guard !workers.isEmpty else {
            let (status, json) = render([])
            respond(status, json: json)
            return
        }
        var results: [(Worker, UpstreamFetch.Response?)] = []
        let gen = generation
        let timeout = TimeAmount.seconds(Int64(min(state.config.requestTimeoutSecs, 30)))
        for w in workers {
            UpstreamFetch.run(pool: pool, url: w.url, method: method, path: path, timeout: timeout) { [weak self] result in
                results.append((w, try? result.get()))
                guard results.count == workers.count, let self, self.generation == gen else { return }
                let (status, json) = render(results)
                self.respond(status, json: json)
            }
        }
    }

    // MARK: writing responses

    private var status = 200

    private func decorate(_ headers: inout HTTPHeaders) {
        headers.add(name: "x-request-id", value: requestID)
        state.cors.decorate(&headers, origin: head?.headers.first(name: "origin"))
        if state.isDraining { keepAlive = false }
        if !keepAlive { headers.replaceOrAdd(name: "connection", value: "close") }
    }

    private func respond(error: APIError, extra more: HTTPHeaders = HTTPHeaders()) {
        var extra = more
        extra.add(name: "x-smg-error-code", value: error.code)
        respond(error.status, json: error.body, extra: extra)
    }

    private func respond(_ status: HTTPResponseStatus, json: String, extra: HTTPHeaders = HTTPHeaders()) {
        respond(status, body: json, contentType: "application/json", extra: extra)
    }

    private func respond(_ status: HTTPResponseStatus, body: String, contentType: String?, extra: HTTPHeaders) {
        guard let context else { return }
        var headers = extra
        if let contentType { headers.add(name: "content-type", value: contentType) }
        headers.add(name: "content-length", value: String(body.utf8.count))
        decorate(&headers)
        self.status = Int(status.code)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head?.version ?? .http1_1, status: status, headers: headers))), promise: nil)
        if !body.isEmpty { context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil) }
        finishResponse()
    }

    private func finishResponse() {
        guard let context else { return }
        let close = !keepAlive
        // Record the request before writing its end: NIO's pipelining helper hands us the next
        // pipelined request synchronously inside that write.
        completeRequest()
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if close { written.assumeIsolated().whenComplete { _ in context.close(promise: nil) } }
    }

    /// Records the finished request once: metrics and the in-flight count shutdown waits on.
    private func completeRequest() {
        guard phase != .idle else { return }
        phase = .idle
        let seconds = Double(NIODeadline.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        state.metrics.httpRequest(method: head?.method.rawValue ?? "GET", path: route.metricPath, status: status, seconds: seconds)
        state.requestEnded()
        if admitted {
            admitted = false
            state.admission.release()
        }
        retries = 0
        failedWorkers.removeAll()
        attemptOpen = false
        head = nil
        // Do not let an idle keep-alive connection hold on to the memory of one huge body.
        if body.capacity > 1 << 20 { body = ByteBuffer() } else { body.clear() }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
