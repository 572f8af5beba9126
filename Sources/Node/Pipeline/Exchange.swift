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
///
/// Its parts, one file each: this one (state, channel and upstream events, performing actions),
/// `Exchange+Selection` (admission, sticky sessions, choosing the worker or the PD pair),
/// `Exchange+Attempt` (one attempt: bodies, head, deadline, connection, its end, the error a
/// failure gets) and `Exchange+Prefill` (PD's prefill half and the logprob merge). Its state is
/// internal rather than private only so those extensions reach it; nothing else does.
final class Exchange: UpstreamResponseDelegate {
    typealias Machine = ExchangeStateMachine<Worker>

    var machine: Machine
    var plan: ExchangePlan
    let state: RouterState
    let pool: UpstreamPool
    /// Strong on purpose, like every reference to and from an exchange: a weak reference gives an
    /// object a side table, which sends each of its retains and releases down a slow path (it
    /// showed in profiles). The cycle with the client is broken when the request completes.
    let client: any ExchangeClient
    /// Policy randomness (random, power_of_two picks); retry jitter is the machine's own.
    var rng: SplitMix64

    var upstream: PooledConnection?
    /// The head sent to the current attempt's worker, kept for a resend on a fresh connection.
    var upstreamHead: HTTPRequestHead?
    var attemptTimer: Scheduled<Void>?
    var retryTimer: Scheduled<Void>?
    var admissionTicket: UInt64?
    /// The policy's choice of the current attempt's worker (the decode half in PD mode; nil for
    /// an info route in PD mode, which goes to the first prefill): why and by which policy
    /// (metrics, what the mesh and Redis share), and with `--dp-aware` its rank
    /// (`data_parallel_rank`, or `routed_dp_rank` in PD mode), on which the attempt's books are
    /// kept until it ends.
    var choice: WorkerRegistry.Choice?
    var selectedRank: Int? { choice?.rank }
    /// Body parts of the current upstream read burst, written to the client as one piece when
    /// the burst ends: a worker that sends several stream events back to back costs one chunk
    /// and one write, not one per event.
    var burst: ByteBuffer?

    // PD disaggregation (`plan.kind == .prefillDecode`): the current attempt's prefill half and
    // the body both halves are sent (with its bootstrap fields).
    var prefill: PrefillLeg?
    /// The prefill worker (and with --dp-aware its rank) chosen with the current decode worker.
    var prefillChoice: WorkerRegistry.Choice?
    var attemptBody: ByteBuffer?
    /// Prefill workers that failed this request, avoided by later attempts when others can serve.
    var failedPrefills: Set<String> = []
    /// Which half the last failure came from, for the error the client gets.
    var failedRole: WorkerRole?
    var lastFailedPrefill: Worker?
    /// `return_logprob` in PD: the merge of the current attempt (it takes the prefill's lists
    /// whenever they come, and the decode answer once it is a 200), a held head (a whole JSON
    /// answer changes length), and whether the end waits for the prefill.
    var logprobs: PDLogprobs?
    var heldHead: (status: HTTPResponseStatus, headers: HTTPHeaders)?
    var endAwaitsPrefill = false

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
            guard let ready = logprobs!.decodePart(buffer) else { return decodeAnswerTooLarge() }
            if !ready.isEmpty { appendToBurst(ByteBuffer(bytes: ready)) }
            return
        }
        appendToBurst(buffer)
    }

    func appendToBurst(_ buffer: ByteBuffer) {
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

    func sendBurst() {
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

    func perform(_ action: Machine.Action) {
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
}
