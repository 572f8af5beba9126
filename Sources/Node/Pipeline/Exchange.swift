import Primitives
import NIOCore
import NIOHTTP1
import Policies

/// The client side of an exchange: where the response goes. `RouterHandler` implements it; the
/// client side adds what belongs to the client connection (request id, CORS, keep-alive).
protocol ExchangeClient: AnyObject {
    func sendHead(status: HTTPResponseStatus, headers: HTTPHeaders)
    func sendBody(_ buffer: ByteBuffer)
    func flush()
    func endResponse()
    func respond(error: APIError, extra: HTTPHeaders)
    /// Part of the response is out and the rest will never come: closing is the only honest signal.
    func abortResponse()
}

extension Worker: ExchangeTarget {}

/// The shell of one request's exchange with the workers: it feeds channel, pool, timer and
/// admission events to `ExchangeStateMachine` and performs the actions it returns, all on the
/// client connection's event loop. It holds no decision of its own.
final class Exchange: UpstreamResponseDelegate {
    typealias Machine = ExchangeStateMachine<Worker>

    private var machine: Machine
    private var plan: ExchangePlan
    private let state: RouterState
    private let pool: UpstreamPool
    /// Strong on purpose, like every reference to and from an exchange: a weak reference gives an
    /// object a side table, which sends each of its retains and releases down a slow path (it
    /// showed in profiles). The cycle with the client is broken when the request completes.
    private let client: any ExchangeClient
    /// Policy randomness (random, power_of_two picks); retry jitter is the machine's own.
    private var rng: SplitMix64

    private var upstream: PooledConnection?
    /// The head sent to the current attempt's worker, kept for a resend on a fresh connection.
    private var upstreamHead: HTTPRequestHead?
    private var attemptTimer: Scheduled<Void>?
    private var retryTimer: Scheduled<Void>?
    private var admissionTicket: UInt64?
    /// The policy's choice of the current attempt's worker (the decode half in PD mode; nil for
    /// an info route in PD mode, which goes to the first prefill): why and by which policy
    /// (metrics, what the mesh and Redis share), and with `--dp-aware` its rank
    /// (`data_parallel_rank`, or `routed_dp_rank` in PD mode), on which the attempt's books are
    /// kept until it ends.
    private var choice: WorkerRegistry.Choice?
    private var selectedRank: Int? { choice?.rank }
    /// Body parts of the current upstream read burst, written to the client as one piece when
    /// the burst ends: a worker that sends several stream events back to back costs one chunk
    /// and one write, not one per event.
    private var burst: ByteBuffer?

    // PD disaggregation (`plan.kind == .prefillDecode`): the current attempt's prefill half and
    // the body both halves are sent (with its bootstrap fields).
    private var prefill: PrefillLeg?
    /// The prefill worker (and with --dp-aware its rank) chosen with the current decode worker.
    private var prefillChoice: WorkerRegistry.Choice?
    private var attemptBody: ByteBuffer?
    /// Prefill workers that failed this request, avoided by later attempts when others can serve.
    private var failedPrefills: Set<String> = []
    /// Which half the last failure came from, for the error the client gets.
    private var failedRole: WorkerRole?
    private var lastFailedPrefill: Worker?
    /// `return_logprob` in PD: the merge of the current attempt (it takes the prefill's lists
    /// whenever they come, and the decode answer once it is a 200), a held head (a whole JSON
    /// answer changes length), and whether the end waits for the prefill.
    private var logprobs: PDLogprobs?
    private var heldHead: (status: HTTPResponseStatus, headers: HTTPHeaders)?
    private var endAwaitsPrefill = false

    init(plan: ExchangePlan, state: RouterState, pool: UpstreamPool, client: any ExchangeClient, seed: UInt64) {
        self.plan = plan
        self.state = state
        self.pool = pool
        self.client = client
        self.rng = SplitMix64(seed: seed)
        self.machine = Machine(
            needsAdmission: plan.isInference && state.admission.config.isActive,
            attemptTimeoutMs: UInt64(state.config.requestTimeoutSecs) * 1000,
            retry: state.config.retry, seed: seed ^ 0x5DEE_CE66_D1CE_5EED)
    }

    func start() { perform(machine.start()) }

    /// The client connection closed: whatever runs is dropped.
    func clientClosed() { perform(machine.clientClosed()) }

    /// Backpressure: while the client cannot take more bytes, stop reading from the worker, so a
    /// slow client never makes the router buffer a whole large response.
    func clientWritabilityChanged(writable: Bool) {
        upstream?.channel.setOption(ChannelOptions.autoRead, value: writable).whenFailure { _ in }
    }

    // MARK: upstream events (UpstreamResponseDelegate)

    func upstreamHead(_ response: HTTPResponseHead) {
        let action = machine.upstreamHead(status: Int(response.status.code), now: state.nowMs())
        guard case .forwardHead(let exhausted) = action else { return perform(action) }
        if exhausted { state.metrics.retriesExhausted(endpoint: plan.endpoint) }
        if logprobs != nil, response.status != .ok { logprobs = nil }  // an error answer goes out as it is
        if logprobs != nil {
            if !plan.stream {
                var headers = UpstreamHeaders.response(response.headers)
                headers.remove(name: "content-length")
                heldHead = (response.status, headers)
                return
            }
        }
        client.sendHead(status: response.status, headers: UpstreamHeaders.response(response.headers))
    }

    func upstreamBody(_ buffer: ByteBuffer) {
        guard case .forwardBody = machine.upstreamBodyPart() else { return }
        if logprobs != nil {
            let ready = logprobs!.decodePart(buffer)
            if !ready.isEmpty { appendToBurst(ByteBuffer(bytes: ready)) }
            return
        }
        appendToBurst(buffer)
    }

    private func appendToBurst(_ buffer: ByteBuffer) {
        if burst == nil {
            burst = buffer
        } else {
            var more = buffer
            burst!.writeBuffer(&more)
        }
    }

    func upstreamReadComplete() {
        sendBurst()
        client.flush()
    }

    private func sendBurst() {
        guard let b = burst else { return }
        burst = nil
        client.sendBody(b)
    }

    func upstreamEnd(reusable: Bool) { perform(machine.upstreamEnd(keepAlive: reusable)) }

    func upstreamFailed(_ error: any Error) {
        let beforeResponse: Bool
        if case UpstreamError.closedBeforeResponse = error { beforeResponse = true } else { beforeResponse = false }
        perform(machine.upstreamClosed(beforeResponse: beforeResponse, now: state.nowMs()))
    }

    // MARK: performing actions

    private func perform(_ action: Machine.Action) {
        switch action {
        case .none, .forwardHead, .forwardBody:
            break
        case .requestAdmission:
            requestAdmission()
        case .selectWorker(let avoiding):
            selectWorker(avoiding: avoiding)
        case .startAttempt(let worker, let deadlineMs, let firstAttempt):
            startAttempt(worker, deadlineMs: deadlineMs, firstAttempt: firstAttempt)
        case .sendRequest:
            sendRequest()
        case .resendOnFreshConnection:
            upstream = nil
            acquireConnection(fresh: true)
        case .discardConnection:
            break  // handled where the connection arrives
        case .retry(let end, let delayMs):
            state.metrics.retry(endpoint: plan.endpoint, worker: end.target.url.canonical, delayMs: delayMs)
            endAttempt(end)
            cancelPrefill()
            retryTimer = pool.loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delayMs))) { [self] in
                self.retryTimer = nil
                self.perform(self.machine.retryTimerFired(now: self.state.nowMs()))
            }
        case .succeed(let end, let releaseSlot):
            // Everything is settled before the end is written: right after that write the
            // handler may start the connection's next (pipelined) request.
            endAttempt(end)
            if releaseSlot { state.admission.release() }
            if let lp = logprobs, !lp.prefillKnown {
                endAwaitsPrefill = true  // `prefillAnswered` ends the response
                return
            }
            finishResponse()
        case .fail(let failure, let end, let releaseSlot, let exhausted, let responseStarted):
            if let end { endAttempt(end) }
            cancelPrefill()
            if exhausted { state.metrics.retriesExhausted(endpoint: plan.endpoint) }
            if releaseSlot { state.admission.release() }
            if responseStarted {
                client.abortResponse()
            } else {
                let (error, extra) = apiError(failure, worker: end?.target)
                state.metrics.routerError(endpoint: plan.endpoint, code: error.code)
                client.respond(error: error, extra: extra)
            }
        case .abandon(let end, let leaveQueue, let releaseSlot):
            if let end { endAttempt(end) }
            cancelPrefill()
            retryTimer?.cancel()
            if leaveQueue, let ticket = admissionTicket { state.admission.cancel(ticket) }
            admissionTicket = nil
            if releaseSlot { state.admission.release() }
        case .releaseSlot:
            state.admission.release()
        }
    }

    private func requestAdmission() {
        let me = NIOLoopBound(self, eventLoop: pool.loop)
        admissionTicket = state.admission.admit(on: pool.loop) { result in
            let exchange = me.value
            exchange.admissionTicket = nil
            switch result {
            case .admitted: exchange.perform(exchange.machine.admission(.admitted))
            case .queueFull: exchange.perform(exchange.machine.admission(.queueFull))
            case .timedOut: exchange.perform(exchange.machine.admission(.timedOut))
            }
        }
    }

    /// `--session-store redis` was asked (once per request) about the routing key.
    private var sessionsLookedUp = false
    /// The policies (by registry key) whose assignment of the routing key came from Redis: the
    /// mesh is told, so the other routers hold it too (and keep it through a Redis outage)
    /// without asking Redis themselves.
    private var adoptedFromRedis: Set<String> = []

    private func selectWorker(avoiding: Set<String>) {
        if let sessions = state.sessions, !sessionsLookedUp, let key = plan.routing.routingKey, !key.isEmpty {
            sessionsLookedUp = true
            // One assignment per policy that chooses for this request: in PD mode the prefill's
            // and the decode's. Only a key this router does not know costs a Redis read: the
            // local table (kept current by the mesh when on) is the fast path.
            let routingKey = ManualPolicy.normalize(key)
            let roles: [WorkerRole] = if case .prefillDecode = plan.kind { [.prefill, .decode] } else { [.regular] }
            let unknown = roles.map { state.registry.policyModel(plan.model, role: $0) }
                .filter { state.registry.sessionLastUse(model: $0, routingKey: routingKey) == nil }
            if !unknown.isEmpty {
                // Both halves' reads at once: a slow Redis costs one read deadline, not two.
                return OffLoop.run(on: pool.loop, {
                    await withTaskGroup(of: (scope: String, worker: String?).self) { group in
                        for scope in unknown { group.addTask { (scope, await sessions.lookup(model: scope, routingKey: routingKey)) } }
                        var found: [(scope: String, worker: String)] = []
                        for await answer in group { if let w = answer.worker { found.append((answer.scope, w)) } }
                        return found
                    }
                }) { [self] found in
                    guard case .selecting = self.machine.state else { return }
                    for (scope, worker) in found {
                        self.state.registry.adoptAssignment(model: scope, routingKey: routingKey, worker: worker, now: self.state.nowMs())
                        self.adoptedFromRedis.insert(scope)
                    }
                    self.selectWorker(avoiding: avoiding)
                }
            }
        }
        plan.routing.now = state.nowMs()
        if case .prefillDecode = plan.kind { return selectPair(avoiding: avoiding) }
        if state.config.pd != nil {
            // Info routes in PD mode: the first prefill worker that can answer (as the reference).
            let prefills = state.registry.all.filter { $0.role == .prefill && $0.isAvailable }
            guard let w = prefills.first(where: { !avoiding.contains($0.id) }) ?? prefills.first else {
                failedRole = .prefill
                return perform(machine.noWorker(unknownModel: false))
            }
            choice = nil
            return perform(machine.workerChosen(w, now: plan.routing.now))
        }
        switch state.registry.select(model: plan.model, request: plan.routing, avoiding: avoiding, using: &rng) {
        case .unknownModel: perform(machine.noWorker(unknownModel: true))
        case .noneAvailable: perform(machine.noWorker(unknownModel: false))
        case .worker(let choice):
            self.choice = choice
            perform(machine.workerChosen(choice.worker, now: plan.routing.now))
        }
    }

    /// PD: a prefill worker by the prefill policy, then a decode worker by the decode policy;
    /// the machine tracks the decode worker, this shell the prefill.
    private func selectPair(avoiding: Set<String>) {
        switch state.registry.select(model: plan.model, request: plan.routing, avoiding: failedPrefills, role: .prefill, using: &rng) {
        case .unknownModel:
            perform(machine.noWorker(unknownModel: true))
        case .noneAvailable:
            failedRole = .prefill
            perform(machine.noWorker(unknownModel: false))
        case .worker(let prefillPick):
            switch state.registry.select(model: plan.model, request: plan.routing, avoiding: avoiding, role: .decode, using: &rng) {
            case .unknownModel: perform(machine.noWorker(unknownModel: true))
            case .noneAvailable:
                failedRole = .decode
                perform(machine.noWorker(unknownModel: false))
            case .worker(let decodePick):
                prefillChoice = prefillPick
                choice = decodePick
                if machine.retries == 0 { recordDecision(prefillPick) }
                perform(machine.workerChosen(decodePick.worker, now: plan.routing.now))
            }
        }
    }

    /// Writes what is left of a successful answer and ends it (merged with the prefill's
    /// logprobs when asked).
    private func finishResponse() {
        if logprobs != nil {
            let rest = logprobs!.decodeEnded()
            logprobs = nil
            if let held = heldHead {
                heldHead = nil
                var headers = held.headers
                headers.add(name: "content-length", value: String(rest.count))
                client.sendHead(status: held.status, headers: headers)
            }
            if !rest.isEmpty { appendToBurst(ByteBuffer(bytes: rest)) }
        }
        sendBurst()
        client.endResponse()
    }

    /// PD with `return_logprob`: the current prefill half ended with these lists (none if it failed).
    private func prefillAnswered(_ leg: PrefillLeg, _ lists: [[JSONValue]]) {
        guard leg === prefill, logprobs != nil else { return }
        let ready = logprobs!.prefillAnswered(lists)
        if !ready.isEmpty {
            client.sendBody(ByteBuffer(bytes: ready))
            client.flush()
        }
        if endAwaitsPrefill {
            endAwaitsPrefill = false
            finishResponse()
        }
    }

    /// The current attempt's prefill half is not needed any more.
    private func cancelPrefill() {
        let leg = prefill
        prefill = nil
        leg?.cancel()
        logprobs = nil
    }

    /// PD: the prefill half of the current attempt failed.
    private func prefillFailed(_ leg: PrefillLeg) {
        guard leg === prefill else { return }
        prefill = nil
        failedPrefills.insert(leg.worker.id)
        lastFailedPrefill = leg.worker
        failedRole = .prefill
        perform(machine.otherLegFailed(now: state.nowMs()))
    }

    /// The first routing decision of an inference request: metrics, and the sticky assignments
    /// the mesh and Redis share, each under the key of the policy that made it (so a PD pair's
    /// prefill and decode halves are kept apart) and naming the candidate it chose (with
    /// `--dp-aware`, the rank too).
    private func recordDecision(_ choice: WorkerRegistry.Choice) {
        let (w, reason) = (choice.worker, choice.reason)
        // A model label only for models a worker is known to serve: request-supplied names
        // would otherwise each add series (a worker of unknown model takes any name).
        let label = plan.model.map { w.modelID == $0 ? $0 : "other" } ?? "default"
        state.metrics.routed(model: label, endpoint: plan.endpoint, streaming: plan.stream, worker: w.url.canonical,
                             policy: choice.policy.rawValue, reason: reason.rawValue)
        state.treeSync?.noteDecision()
        guard reason == .newAssignment || reason == .reassigned || reason == .sticky, let key = plan.routing.routingKey else { return }
        if state.mesh != nil, reason != .sticky || adoptedFromRedis.contains(choice.policyKey) {
            MeshBridge.assigned(routingKey: key, policyKey: choice.policyKey, candidate: choice.candidate, state: state)
        }
        if let sessions = state.sessions, !key.isEmpty {
            sessions.used(model: choice.policyKey, routingKey: ManualPolicy.normalize(key), worker: choice.candidate,
                          changed: reason != .sticky, now: plan.routing.now)
        }
    }

    private func startAttempt(_ w: Worker, deadlineMs: UInt64, firstAttempt: Bool) {
        if firstAttempt, plan.isInference, let choice { recordDecision(choice) }
        w.attemptStarted(rank: selectedRank, now: plan.routing.now)
        failedRole = .decode
        attemptBody = nil
        if case .prefillDecode(let batchSize, let mergeLogprobs) = plan.kind, let p = prefillChoice?.worker {
            // Both halves get the prefill's address and a fresh room per attempt; with
            // --dp-aware each half its rank (`routed_dp_rank`) and the decode half the prefill's
            // (`disagg_prefill_dp_rank`: where its KV cache is).
            let fields = BootstrapFields(host: p.url.host, port: p.bootstrapPort, batchSize: batchSize, using: &rng)
            let shared = fields.inserted(into: plan.body, objectIsEmpty: plan.bodyIsEmptyObject)
            var prefillBody = shared, decodeBody = shared
            if let rank = prefillChoice?.rank {
                prefillBody = JSONObjectBody.appending(#""routed_dp_rank":\#(rank)"#, to: prefillBody, objectIsEmpty: false)
                decodeBody = JSONObjectBody.appending(#""disagg_prefill_dp_rank":\#(rank)"#, to: decodeBody, objectIsEmpty: false)
            }
            if let rank = selectedRank { decodeBody = JSONObjectBody.appending(#""routed_dp_rank":\#(rank)"#, to: decodeBody, objectIsEmpty: false) }
            attemptBody = decodeBody
            let prefillHead = UpstreamHeaders.request(plan.head, host: p.url.hostHeader, bodyLength: prefillBody.readableBytes, requestID: plan.requestID,
                                                      bearer: p.apiKey ?? state.config.apiKey, clientAddress: plan.clientAddress)
            var leg: PrefillLeg?
            leg = PrefillLeg(worker: p, rank: prefillChoice?.rank, head: prefillHead, body: prefillBody, pool: pool, state: state) { [self] in
                if let leg { prefillFailed(leg) }
            }
            prefill = leg
            if mergeLogprobs {
                logprobs = PDLogprobs(stream: plan.stream)
                leg!.collectLogprobs { [self] lists in if let leg { prefillAnswered(leg, lists) } }
            }
            leg!.start(timeout: .seconds(Int64(state.config.requestTimeoutSecs)))
        } else if let rank = selectedRank {
            attemptBody = JSONObjectBody.appending(#""data_parallel_rank":\#(rank)"#, to: plan.body, objectIsEmpty: plan.bodyIsEmptyObject)
        }
        upstreamHead = UpstreamHeaders.request(plan.head, host: w.url.hostHeader, bodyLength: (attemptBody ?? plan.body).readableBytes,
                                               requestID: plan.requestID, bearer: w.apiKey ?? state.config.apiKey,
                                               clientAddress: plan.clientAddress)
        let now = state.nowMs()
        attemptTimer = pool.loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(deadlineMs &- min(now, deadlineMs)))) { [self] in
            self.attemptTimer = nil
            self.perform(self.machine.attemptTimerFired(now: self.state.nowMs()))
        }
        acquireConnection(fresh: false)
    }

    private func acquireConnection(fresh: Bool) {
        guard case .connecting(let attempt) = machine.state else { return }
        pool.acquire(attempt.target.url, fresh: fresh) { [self] result in
            switch result {
            case .failure:
                self.perform(self.machine.connectFailed(now: self.state.nowMs()))
            case .success(let c):
                let action = self.machine.connected(reused: c.handler.reused)
                if case .discardConnection = action { return c.channel.close(promise: nil) }
                self.upstream = c
                c.handler.delegate = self
                self.perform(action)
            }
        }
    }

    private func sendRequest() {
        guard let c = upstream, let head = upstreamHead else { return }
        c.channel.write(HTTPClientRequestPart.head(head), promise: nil)
        let body = attemptBody ?? plan.body
        if body.readableBytes > 0 {
            c.channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
        }
        c.channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
    }

    /// Ends an attempt exactly as the machine says: timer, in-flight count, breaker, connection.
    private func endAttempt(_ end: Machine.AttemptEnd) {
        attemptTimer?.cancel()
        attemptTimer = nil
        end.target.attemptEnded(rank: selectedRank, success: end.breakerSuccess, state: state)
        if let c = upstream {
            upstream = nil
            switch end.connection {
            case .release: pool.release(c)
            case .close, .none:
                c.handler.delegate = nil
                c.channel.close(promise: nil)
            }
        }
    }

    private func apiError(_ failure: Machine.Failure, worker: Worker?) -> (APIError, HTTPHeaders) {
        var extra = HTTPHeaders()
        switch failure {
        case .rateLimited:
            extra.add(name: "retry-after", value: String(state.admission.retryAfterSeconds))
            return (.rateLimited, extra)
        case .queueTimeout: return (.queueTimeout(state.config.admission.queueTimeoutMs / 1000), extra)
        case .modelNotFound: return (.modelNotFound(plan.model ?? ""), extra)
        case .noWorkers:
            guard case .prefillDecode = plan.kind, let role = failedRole else { return (.noWorkers(plan.model), extra) }
            return (APIError(.serviceUnavailable, type: "service_unavailable", code: "no_\(role.rawValue)_workers",
                             "no healthy \(role.rawValue) worker\(plan.model.map { " for model \($0)" } ?? "") is available"), extra)
        case .upstreamTimeout:
            let error = APIError.upstreamTimeout(state.config.requestTimeoutSecs)
            guard case .prefillDecode = plan.kind else { return (error, extra) }
            return (APIError(error.status, type: error.type, code: "decode_timeout", error.message), extra)
        case .upstreamFailed:
            guard case .prefillDecode = plan.kind else { return (.upstreamFailed("worker \(worker?.url.canonical ?? "?") failed"), extra) }
            let role = failedRole ?? .decode
            let url = (role == .prefill ? lastFailedPrefill : worker)?.url.canonical ?? "?"
            return (APIError(.badGateway, type: "upstream_error", code: "\(role.rawValue)_failed",
                             "the \(role.rawValue) half of the request failed (\(url)); the KV cache never reached a decode worker"), extra)
        }
    }
}
