import Primitives
import NIOCore
import NIOHTTP1
import Policies
import Reliability
import Tracing

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

/// The shell of one request's exchange with the workers: it feeds call, timer and admission
/// events to `ExchangeStateMachine` and performs the actions it returns, all on the client
/// connection's event loop. It holds no decision of its own.
///
/// Its parts, one file each: this one (state, the calls' events, performing actions),
/// `Exchange+Selection` (admission, sticky sessions, choosing the worker or the PD pair),
/// `Exchange+Attempt` (one attempt: the bodies and heads of its halves, its calls, their ends,
/// the error a failure gets) and `Exchange+Prefill` (PD's logprob merge and the response's
/// end). Its state is internal rather than private only so those extensions reach it.
final class Exchange: UpstreamCallDelegate {
    typealias Machine = ExchangeStateMachine<Worker>

    var machine: Machine
    var plan: ExchangePlan
    let state: RouterState
    let pool: UpstreamPool
    /// Strong on purpose, like every reference to and from an exchange: a weak reference gives an
    /// object a side table, which sends each of its retains and releases down a slow path (it
    /// showed in profiles). The cycle with the client is broken when the request completes.
    let client: any ExchangeClient
    /// Policy randomness (random, power_of_two picks) and PD's bootstrap rooms; retry jitter is
    /// the machine's own.
    var rng: SplitMix64

    /// The current attempt's call to its worker (the whole request, or PD's decode half).
    var primaryCall: UpstreamCall?
    /// The workers of `primaryCall` and `prefillCall`: what they send is their progress, a call
    /// that gets no answer their transport failure (`Liveness`).
    var primaryWorker: Worker?
    var prefillWorker: Worker?
    var retryTimer: Scheduled<Void>?
    var admissionTicket: UInt64?
    /// The policy's choice of the current attempt's worker (the decode half in PD mode; nil for
    /// an info route in PD mode, which goes to the first prefill): why and by which policy
    /// (metrics, what the mesh and Redis share), and with `--dp-aware` its rank
    /// (`data_parallel_rank`, or `routed_dp_rank` in PD mode), on which the attempt's books are
    /// kept until it ends.
    var choice: WorkerRegistry.Choice?
    var selectedRank: Int? { choice?.rank }
    /// `--sse-keepalive-secs` on a relayed event stream: the timer, when the worker last sent
    /// bytes, and the last four bytes written to the client (a comment goes only where an event
    /// ended).
    var keepaliveTimer: Scheduled<Void>?
    var lastUpstreamMs: UInt64 = 0
    var streamTail: UInt32 = 0
    /// Body parts of the current upstream read burst, written to the client as one piece when
    /// the burst ends: a worker that sends several stream events back to back costs one chunk
    /// and one write, not one per event.
    var burst: ByteBuffer?

    // PD disaggregation (`plan.kind == .prefillDecode`).
    /// The prefill half's call: the current attempt's, or one still read to its end after its
    /// decode half completed the response.
    var prefillCall: UpstreamCall?
    /// The prefill worker (and with --dp-aware its rank) of `prefillCall`.
    var prefillChoice: WorkerRegistry.Choice?
    /// `return_logprob`: the merge of the current attempt (the prefill's answer and lists, the
    /// decode answer once it is a 200), and the decode head while a whole JSON answer is held
    /// (its length changes).
    var logprobs: PDLogprobs?
    var heldHead: (status: HTTPResponseStatus, headers: HTTPHeaders)?

    /// When the exchange was made (`smg_router_request_duration_seconds`), and whether its end
    /// was recorded.
    let startedAt = NIODeadline.now()
    var endRecorded = false
    /// The labels of the first routing decision (`routeLabels`), kept so later counts of the
    /// request do not work them out again.
    var routedLabels: RouterMetrics.RouteLabels?

    /// With tracing on: the wait for admission, and the current attempt's calls (`Exchange+Trace`).
    var admissionSpan: (any Span)?
    var primarySpan: (any Span)?
    var prefillSpan: (any Span)?

    /// `--session-store redis` was asked (once per request) about the routing key.
    var sessionsLookedUp = false
    /// The policies (by registry key) whose assignment of the routing key came from Redis: the
    /// mesh is told, so the other routers hold it too (and keep it through a Redis outage)
    /// without asking Redis themselves.
    var adoptedFromRedis: Set<String> = []

    init(plan: ExchangePlan, state: RouterState, pool: UpstreamPool, client: any ExchangeClient, seed: UInt64) {
        self.plan = plan
        self.state = state
        self.pool = pool
        self.client = client
        self.rng = SplitMix64(seed: seed)
        var mergesLogprobs = false
        if case .prefillDecode(_, true) = plan.kind { mergesLogprobs = true }
        self.machine = Machine(
            needsAdmission: plan.isInference && state.admission.config.isActive, endWaitsForPrefill: mergesLogprobs,
            attemptTimeoutMs: UInt64(state.config.requestTimeoutSecs) * 1000,
            retry: state.config.retry, seed: seed ^ 0x5DEE_CE66_D1CE_5EED)
    }

    func start() {
        plan.trace?.model(plan.model)
        perform(machine.start())
    }

    /// The client connection closed: whatever runs is dropped.
    func clientClosed() { perform(machine.clientClosed()) }

    /// Backpressure: while the client cannot take more bytes, stop reading from the worker, so a
    /// slow client never makes the router buffer a whole large response.
    func clientWritabilityChanged(writable: Bool) { primaryCall?.setAutoRead(writable) }

    // MARK: the calls' events (UpstreamCallDelegate)

    func callHead(_ call: UpstreamCall, _ response: HTTPResponseHead) {
        guard call === primaryCall else { return }
        progressed(primaryWorker, now: state.nowMs())
        state.metrics.upstreamResponse(status: Int(response.status.code))
        let action = machine.upstreamHead(status: Int(response.status.code), now: state.nowMs())
        guard case .forwardHead(let exhausted) = action else { return perform(action) }
        if exhausted { state.metrics.retriesExhausted(workerType: choice?.worker.workerType ?? "regular", endpoint: plan.endpoint) }
        if logprobs != nil, response.status != .ok { logprobs = nil }  // an error answer goes out as it is
        if logprobs != nil, !plan.stream {
            var headers = UpstreamHeaders.response(response.headers)
            headers.remove(name: "content-length")
            heldHead = (response.status, headers)
            return
        }
        client.sendHead(status: response.status, headers: UpstreamHeaders.response(response.headers))
        let keepalive = state.config.sseKeepaliveSecs
        if keepalive > 0, plan.stream, response.status == .ok,
           response.headers.first(name: "content-type")?.lowercased().hasPrefix("text/event-stream") == true {
            lastUpstreamMs = state.nowMs()
            streamTail = Self.eventEnd
            armKeepalive(afterMs: UInt64(keepalive) * 1000)
        }
    }

    func callBody(_ call: UpstreamCall, _ buffer: ByteBuffer) {
        guard call === primaryCall else { logprobs?.prefillPart(buffer); return }
        guard case .forwardBody = machine.upstreamBodyPart() else { return }
        if logprobs != nil {
            guard let ready = logprobs!.decodePart(buffer) else { return decodeAnswerTooLarge() }
            if !ready.isEmpty { appendToBurst(ByteBuffer(bytes: ready)) }
            return
        }
        appendToBurst(buffer)
    }

    func callReadComplete(_ call: UpstreamCall) {
        let now = state.nowMs()
        guard call === primaryCall else {
            if call === prefillCall { progressed(prefillWorker, now: now) }
            return
        }
        progressed(primaryWorker, now: now)
        if keepaliveTimer != nil { lastUpstreamMs = now }
        sendBurst()
        client.flush()
    }

    func callEnded(_ call: UpstreamCall, reusable: Bool) {
        if call === primaryCall { return perform(machine.upstreamEnd(keepAlive: reusable)) }
        logprobs?.prefillAnswerEnded(ok: call.status / 100 == 2)
        perform(machine.prefillEnded(status: call.status, keepAlive: reusable, now: state.nowMs()))
    }

    func callFailed(_ call: UpstreamCall, _ error: any Error) {
        var timedOut = false
        if case UpstreamError.timedOut = error { timedOut = true }
        let now = state.nowMs()
        // No answer at all (not a body cut short): after silence, the worker is stalled.
        if call.status == 0, let w = call === primaryCall ? primaryWorker : (call === prefillCall ? prefillWorker : nil),
           let verdict = w.transportFailed(now: now, rule: state.config.workerLoad.liveness) {
            livenessChanged(w, to: verdict)
        }
        if call === primaryCall { return perform(machine.upstreamFailed(timedOut: timedOut, now: now)) }
        perform(machine.prefillCallFailed(timedOut: timedOut, now: now))
    }

    /// The worker sent a head or body bytes (once per read burst, not per part), at `now`.
    func progressed(_ w: Worker?, now: UInt64) {
        guard let w, w.progressed(now: now) != nil else { return }
        livenessChanged(w, to: w.livenessVerdict)
    }

    /// A liveness verdict this exchange's calls changed: reported, and told to the other routers.
    private func livenessChanged(_ w: Worker, to verdict: Liveness) {
        LivenessWatch.report(w, to: verdict, metrics: state.metrics, log: state.log(.workers))
        MeshBridge.livenessChanged(w, to: verdict, state: state)
    }

    func appendToBurst(_ buffer: ByteBuffer) {
        if burst == nil {
            burst = buffer
        } else {
            var more = buffer
            burst!.writeBuffer(&more)
        }
    }

    func sendBurst() {
        guard let b = burst else { return }
        burst = nil
        if keepaliveTimer != nil {
            for byte in b.readableBytesView.suffix(4) { streamTail = streamTail << 8 | UInt32(byte) }
        }
        client.sendBody(b)
    }

    // MARK: SSE keep-alive (`--sse-keepalive-secs`)

    /// The comment an idle stream carries: clients and SDKs skip comments.
    static let keepaliveComment = ": keep-alive\n\n"
    /// `streamTail` right after the head: nothing of an event written yet.
    static let eventEnd: UInt32 = 0x0A0A

    /// Whether the bytes written so far end an event (a blank line: LF LF, CR CR or CRLF CRLF).
    var atEventBoundary: Bool {
        streamTail & 0xFFFF == 0x0A0A || streamTail & 0xFFFF == 0x0D0D || streamTail == 0x0D0A_0D0A
    }

    func armKeepalive(afterMs ms: UInt64) {
        keepaliveTimer = pool.loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(ms))) { [self] in
            self.keepaliveTimer = nil
            self.keepaliveDue()
        }
    }

    /// The worker has been silent for the keep-alive interval: a comment, if the stream is
    /// between events; then the next look one interval after the worker's last bytes (or this
    /// comment). Nothing is sent while bytes flow.
    func keepaliveDue() {
        guard case .relaying = machine.state else { return }
        let every = UInt64(state.config.sseKeepaliveSecs) * 1000
        let now = state.nowMs()
        let silent = now > lastUpstreamMs ? now - lastUpstreamMs : 0
        guard silent >= every else { return armKeepalive(afterMs: every - silent) }
        if burst == nil, atEventBoundary {
            client.sendBody(ByteBuffer(string: Self.keepaliveComment))
            client.flush()
            state.metrics.sseKeepalive()
        }
        armKeepalive(afterMs: every)
    }

    // MARK: performing actions

    func perform(_ action: Machine.Action) {
        switch action {
        case .none, .stale, .forwardHead, .forwardBody:
            break
        case .requestAdmission:
            requestAdmission()
        case .selectWorker(let avoiding, let avoidingPrefill):
            selectWorker(avoiding: avoiding, avoidingPrefill: avoidingPrefill)
        case .startAttempt(let worker, let prefill, let deadlineMs, let firstAttempt):
            startAttempt(worker, prefill: prefill, deadlineMs: deadlineMs, firstAttempt: firstAttempt)
        case .endPrefill(let end):
            endPrefill(end)
            if burst != nil {  // stream events that waited for the prefill's logprobs
                sendBurst()
                client.flush()
            }
        case .awaitPrefill(let end):
            endPrimary(end)
        case .retry(let end, let prefill, let delayMs):
            state.metrics.retry(workerType: end.target.workerType, endpoint: plan.endpoint, attempt: machine.retries, delayMs: delayMs)
            logprobs = nil
            endPrimary(end)
            if let prefill { endPrefill(prefill) }
            retryTimer = pool.loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delayMs))) { [self] in
                self.retryTimer = nil
                self.perform(self.machine.retryTimerFired())
            }
        case .succeed(let end, let prefill, let releaseSlot):
            // Everything is settled before the end is written: right after that write the
            // handler may start the connection's next (pipelined) request.
            if let end { endPrimary(end) }
            if let prefill { endPrefill(prefill) }
            if releaseSlot { state.admission.release() }
            recordEnd()
            finishResponse()
        case .fail(let failure, let end, let prefill, let releaseSlot, let exhausted, let responseStarted):
            logprobs = nil
            if let end { endPrimary(end) }
            if let prefill { endPrefill(prefill) }
            if exhausted { state.metrics.retriesExhausted(workerType: end?.target.workerType ?? "regular", endpoint: plan.endpoint) }
            if releaseSlot { state.admission.release() }
            recordEnd()
            if responseStarted {
                client.abortResponse()
            } else {
                let (error, extra) = apiError(failure, primary: end?.target, prefill: prefill?.target)
                state.metrics.routerError(routeLabels, code: error.code)
                client.respond(error: error, extra: extra)
            }
        case .abandon(let end, let prefill, let leaveQueue, let releaseSlot):
            logprobs = nil
            if let end { endPrimary(end) }
            if let prefill { endPrefill(prefill) }
            retryTimer?.cancel()
            if leaveQueue, let ticket = admissionTicket { state.admission.cancel(ticket) }
            admissionEnded("client_left")
            admissionTicket = nil
            if releaseSlot { state.admission.release() }
            recordEnd()
        case .releaseSlot:
            state.admission.release()
        }
    }
}
