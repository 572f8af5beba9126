import Primitives
import Logging
import NIOCore
import NIOHTTP1
import Policies

/// One client connection to the router: the glue between the channel and the pipeline. It reads
/// a request (enforcing the payload limit before the body arrives), hands control routes to
/// `ControlRoutes` and inference to an `Exchange`, and writes what they answer with the
/// connection's own headers (request id, CORS, keep-alive).
///
/// Requests are served one at a time, in order. A client that pipelines (sends the next request
/// before the answer to the previous one) has the next request's parts held back here until
/// the answer is written, and reading pauses while any are held. This replaces NIO's pipelining
/// helper, which stopped and restarted reading around every request: two `epoll_ctl` calls per
/// request for the clients that never pipeline, which is nearly all of them.
final class RouterHandler: ChannelInboundHandler, ExchangeClient {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: RouterState
    private let pool: UpstreamPool
    private var context: ChannelHandlerContext?
    private var rng: SplitMix64

    /// The request being served, from its head to the end of its response.
    private struct Request {
        var head: HTTPRequestHead
        var route: Route
        var requestID: String
        var started: NIODeadline
        var keepAlive: Bool
        /// The most body this route accepts.
        var bodyLimit: BodyLimit
        /// Reading the body (false once refused, or once the body ended).
        var readingBody = true
        /// A JWT is being verified: the request is dispatched when it is accepted.
        var awaitingAuth = false
        /// Whose stored history this request reads and writes (`Tenancy`).
        var tenant: String?
        /// Who it was authenticated as, for the audit log.
        var principal: Principal?
        var status = 200
        /// The code of the JSON error the router answered with (`smg_http_responses_total`'s
        /// `error_code`): empty when a worker answered or nothing failed.
        var errorCode = ""
        /// Its spans, with `--enable-trace`.
        var trace: RequestTrace?
    }
    private var request: Request?
    private var body = ByteBuffer()
    private var exchange: Exchange?
    /// Parts of pipelined requests that arrived while one was being served.
    private var held: [HTTPServerRequestPart] = []
    /// The connection is being closed (or is closed): further parts are dropped.
    private var closing = false
    /// Bumped per request, so a control answer that arrives after its request ended is dropped.
    private var requestNumber = 0

    /// The connection's deadlines (header, body, keep-alive), told of each phase.
    private let deadline: ConnectionGuard?

    init(state: RouterState, pool: UpstreamPool, deadline: ConnectionGuard? = nil) {
        self.state = state
        self.pool = pool
        self.deadline = deadline
        var g = SystemRandomNumberGenerator()
        self.rng = SplitMix64(seed: g.next())
    }

    /// The client's IP, for `X-Forwarded-For` (read once per connection).
    private var clientAddress: String?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clientAddress = context.channel.remoteAddress?.ipAddress
    }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    // MARK: reading the request

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Once the connection is closing, nothing more is read: the HTTP decoder may still hand
        // over requests it had parsed from the same read (found by fuzzing: such a request began
        // after the connection was gone and was never ended).
        guard !closing else { return }
        let part = unwrapInboundIn(data)
        // The next request while this one is still being answered: hold it back.
        if !held.isEmpty || (request != nil && request?.readingBody == false) {
            if held.isEmpty { context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in } }
            held.append(part)
            return
        }
        read(part, context: context)
    }

    private func read(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            begin(head, context: context)
        case .body(var chunk):
            guard let request, request.readingBody else { return }
            if body.readableBytes + chunk.readableBytes > request.bodyLimit.bytes {
                return refuse(.payloadTooLarge(request.bodyLimit))
            }
            deadline?.bodyProgress()
            body.writeBuffer(&chunk)
        case .end:
            guard request?.readingBody == true else { return }
            request?.readingBody = false
            deadline?.serving()
            if request?.awaitingAuth == false { dispatch() }
        }
    }

    private func begin(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        requestNumber &+= 1
        state.requestBegan()
        deadline?.headReceived()
        let route = Route.resolve(head.method, RequestTarget(head.uri).path)
        let access = Access(route)
        let limit = BodyLimit.of(route, access: access, config: state.config)
        request = Request(head: head, route: route, requestID: state.requestIDs.id(for: head.headers), started: .now(),
                          keepAlive: head.isKeepAlive, bodyLimit: limit)
        if let tracer = state.tracer, RequestTrace.traces(route), let id = request?.requestID,
           RequestTrace.sampled(head.headers, ratio: state.config.tracing?.sampleRatio ?? 1, draw: Double(rng.next() >> 11) / Double(1 << 53)) {
            request?.trace = RequestTrace(tracer: tracer, head: head, route: route.metricPath, requestID: id, router: state.config.mesh?.name)
        }
        body.clear()
        // Unknown routes and refused credentials are answered before any body byte is read.
        switch route {
        case .notFound: return refuse(.routeNotFound(head.method, String(RequestTarget(head.uri).path)))
        case .methodNotAllowed: return refuse(.methodNotAllowed(head.method, String(RequestTarget(head.uri).path)))
        default: break
        }
        switch state.access.decide(access, headers: head.headers) {
        case .allowed(let principal):
            if let principal, case .control(let role) = access { state.audit.allowed(principal, needs: role, head: head, requestID: request!.requestID) }
            if case .inference = access { request?.tenant = Tenancy.of(principal, headers: head.headers, settings: state.config.security) }
            request?.principal = principal
        case .denied(let error, let principal):
            if case .control = access { state.audit.denied(principal, error: error, head: head, requestID: request!.requestID) }
            return refuse(error)
        case .verifyToken(let token):
            guard case .control(let role) = access, let jwt = state.jwt else { return refuse(.controlUnauthorized) }
            verify(token, with: jwt, needs: role, context: context)
        }
        // Refuse an announced oversized body before reading any of it.
        if let length = head.headers.first(name: "content-length").flatMap({ Int($0) }), length > limit.bytes {
            return refuse(.payloadTooLarge(limit))
        }
        // curl and others wait (curl: one second) for "100 Continue" before sending a body
        // over 1 KiB; say it at once, since the body is acceptable so far.
        if let expect = head.headers.first(name: "expect"), UpstreamHeaders.nameEquals(expect, "100-continue") {
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
        }
    }

    /// Checks a JWT off the event loop, with reading paused (what already arrived is kept, up to
    /// the control limit); the request goes on, or is refused, when the answer is back.
    private func verify(_ token: String, with jwt: JWTAuthority, needs role: Role, context: ChannelHandlerContext) {
        request?.awaitingAuth = true
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        let number = requestNumber
        OffLoop.run(on: context.eventLoop, { await jwt.authenticate(token) }) { [self] result in
            self.tokenChecked(result, needs: role, number: number)
        }
    }

    private func tokenChecked(_ result: Result<Principal, APIError>, needs role: Role, number: Int) {
        guard requestNumber == number, let request, request.awaitingAuth, let context else { return }
        self.request?.awaitingAuth = false
        let decision: AccessDecision
        switch result {
        case .success(let principal): decision = state.access.authorize(principal, needs: role)
        case .failure(let error): decision = .denied(error, nil)
        }
        switch decision {
        case .allowed(let principal):
            if let principal { state.audit.allowed(principal, needs: role, head: request.head, requestID: request.requestID) }
            if held.isEmpty { context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in } }
            if !request.readingBody { dispatch() }
        case .denied(let error, let principal):
            state.audit.denied(principal, error: error, head: request.head, requestID: request.requestID)
            refuse(error)
        case .verifyToken:
            refuse(.controlUnauthorized)
        }
    }

    /// Answers now without reading the rest of the body. The connection stays open only when
    /// the request announced no body at all.
    private func refuse(_ error: APIError) {
        let announcedBody = request.map { r in
            r.head.headers.contains(name: "transfer-encoding") || (r.head.headers.first(name: "content-length").flatMap { Int($0) } ?? 0) > 0
        } ?? true
        if request?.readingBody == true, announcedBody { request?.keepAlive = false }
        request?.readingBody = false
        request?.awaitingAuth = false
        deadline?.serving()
        body.clear()
        respond(error: error, extra: HTTPHeaders())
    }

    private func dispatch() {
        guard let request else { return }
        var plan: ExchangePlan
        switch request.route {
        case .inference(let kind):
            do throws(APIError) {
                plan = try InferenceRequest.plan(kind, head: request.head, body: body, requestID: request.requestID, tenant: request.tenant, state: state)
            } catch {
                if error.code == .invalidJSON { state.metrics.routerError(.of(model: nil, endpoint: kind.endpoint, registry: state.registry), code: error.code) }
                return respond(error: error, extra: HTTPHeaders())
            }
        case .proxyToAnyWorker:
            plan = InferenceRequest.anyWorker(path: RequestTarget(request.head.uri).path, head: request.head, requestID: request.requestID)
        case .responses(.create):
            let number = requestNumber
            let loop = pool.loop
            ResponsesGateway.prepare(head: request.head, body: body, requestID: request.requestID, tenant: request.tenant, trace: request.trace,
                                     state: state, loop: loop) { [self] prepared in
                guard self.requestNumber == number, self.request != nil else { return }
                switch prepared {
                case .success(let (plan, turn)):
                    self.start(plan, client: ResponsesClient(inner: self, turn: turn, state: self.state, loop: loop, trace: request.trace))
                case .failure(let error):
                    self.state.metrics.routerError(.of(model: nil, endpoint: "responses", registry: self.state.registry), code: error.code)
                    self.respond(error: error, extra: HTTPHeaders())
                }
            }
            return
        default:
            let number = requestNumber
            ControlRoutes.answer(request.route, head: request.head, body: body, tenant: request.tenant, state: state, pool: pool) { [self] result in
                guard self.requestNumber == number, self.request != nil else { return }
                switch result {
                case .success(let r): self.respond(r.status, body: r.body, contentType: r.contentType, extra: r.headers)
                case .failure(let error): self.respond(error: error, extra: HTTPHeaders())
                }
            }
            return
        }
        start(plan, client: self)
    }

    private func start(_ plan: ExchangePlan, client: any ExchangeClient) {
        var plan = plan
        plan.clientAddress = clientAddress
        plan.trace = request?.trace
        let exchange = Exchange(plan: plan, state: state, pool: pool, client: client, seed: rng.next())
        self.exchange = exchange
        // Weak: the exchange holds the client, which holds this; it is called at most once.
        (client as? ResponsesClient)?.abandonExchange = { [weak exchange] in exchange?.clientClosed() }
        exchange.start()
    }

    // MARK: writing responses (ExchangeClient)

    func sendHead(status: HTTPResponseStatus, headers: HTTPHeaders) {
        guard let context, request != nil else { return }
        var headers = headers
        decorate(&headers)
        request?.status = Int(status.code)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request?.head.version ?? .http1_1, status: status, headers: headers))), promise: nil)
    }

    func sendBody(_ buffer: ByteBuffer) {
        context?.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    func flush() { context?.flush() }

    func endResponse() {
        guard let context, let request else { return }
        let close = !request.keepAlive
        // Record the request before writing its end, so a held pipelined request served right
        // after it starts from a clean slate.
        completeRequest()
        deadline?.idle()
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if close {
            held.removeAll()
            closing = true
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        } else if !held.isEmpty {
            serveHeld(context)
        }
    }

    /// Serves held pipelined parts until one of them starts a request that is not answered at
    /// once; reading resumes when none are left.
    private func serveHeld(_ context: ChannelHandlerContext) {
        while !held.isEmpty, request == nil || request?.readingBody == true {
            read(held.removeFirst(), context: context)
        }
        if held.isEmpty, context.channel.isActive { context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in } }
    }

    func respond(error: APIError, extra: HTTPHeaders) {
        var headers = extra
        headers.add(name: "x-smg-error-code", value: error.code.rawValue)
        request?.errorCode = error.code.rawValue
        respond(error.status, body: error.body, contentType: "application/json", extra: headers)
    }

    func abortResponse() {
        request?.keepAlive = false
        request?.errorCode = "stream_error"  // the head's status stays: part of the answer went out
        closing = true
        context?.close(promise: nil)
    }

    private func respond(_ status: HTTPResponseStatus, body: String, contentType: String?, extra: HTTPHeaders) {
        guard let context else { return }
        var headers = extra
        if let contentType { headers.add(name: "content-type", value: contentType) }
        headers.add(name: "content-length", value: String(body.utf8.count))
        sendHead(status: status, headers: headers)
        if !body.isEmpty { context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil) }
        endResponse()
    }

    private func decorate(_ headers: inout HTTPHeaders) {
        guard let request else { return }
        headers.add(name: "x-request-id", value: request.requestID)
        state.cors.decorate(&headers, origin: request.head.headers.first(name: "origin"))
        if state.isDraining { self.request?.keepAlive = false }
        if self.request?.keepAlive == false { headers.replaceOrAdd(name: "connection", value: "close") }
    }

    /// Records the finished request once: metrics and the in-flight count shutdown waits on.
    private func completeRequest() {
        guard let request else { return }
        self.request = nil
        exchange = nil
        if request.head.method == .DELETE, request.route.isStoredHistory {
            state.audit.historyDeletion(request.principal, tenant: request.tenant, head: request.head, status: request.status, requestID: request.requestID)
        }
        let seconds = Double(NIODeadline.now().uptimeNanoseconds - request.started.uptimeNanoseconds) / 1e9
        state.metrics.httpRequest(method: request.head.method.rawValue, path: request.route.metricPath, status: request.status, errorCode: request.errorCode, seconds: seconds)
        state.rates.answered(status: request.status)
        if state.logger.logLevel <= .debug {
            var fields: Logger.Metadata = ["method": "\(request.head.method.rawValue)", "route": "\(request.route.metricPath)", "status": "\(request.status)",
                                           "ms": "\(Int(seconds * 1000))", "request_id": "\(request.requestID)"]
            if !request.errorCode.isEmpty { fields["error_code"] = "\(request.errorCode)" }
            state.logger.debug("request answered", metadata: fields)
        }
        request.trace?.end(status: request.status, errorCode: request.errorCode)
        state.requestEnded()
        // Do not let an idle keep-alive connection hold on to the memory of one huge body.
        if body.capacity > 1 << 20 { body = ByteBuffer() } else { body.clear() }
    }

    // MARK: channel events

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        exchange?.clientWritabilityChanged(writable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        // The client went away: an abandoned generation costs GPU time, so the exchange drops
        // the worker's connection at once instead of reading the rest of the answer.
        exchange?.clientClosed()
        if request != nil {
            if request?.errorCode != "stream_error" {
                request?.status = 499  // client closed request (nginx's convention)
                request?.errorCode = "client_closed_request"
            }
            completeRequest()
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        closing = true
        context.close(promise: nil)
    }
}
