import NIOCore
import NIOHTTP1
import Reliability

/// One attempt: the bodies and heads its halves are sent (with PD's bootstrap fields and DP
/// ranks), their calls, their ends settled exactly as the machine says; and the error a failed
/// request gets.
extension Exchange {
    func startAttempt(_ w: Worker, prefill p: Worker?, deadlineMs: UInt64, firstAttempt: Bool) {
        if firstAttempt, plan.isInference, let choice { recordDecision(choice) }
        let now = state.nowMs()
        let timeout = TimeAmount.milliseconds(Int64(deadlineMs &- min(now, deadlineMs)))
        var body = plan.body
        var prefill: UpstreamCall?
        var room: UInt64?
        if case .prefillDecode(let batchSize, let mergeLogprobs) = plan.kind, let p {
            let bodies = pdBodies(prefill: p, batchSize: batchSize)
            body = bodies.decode
            room = bodies.room
            if mergeLogprobs { logprobs = PDLogprobs(stream: plan.stream) }
            var head = upstreamHead(for: p, bodyLength: bodies.prefill.readableBytes)
            prefillSpan = traceCall(to: p, head: &head, bootstrapRoom: room)
            prefill = UpstreamCall(to: p.url, head: head, body: bodies.prefill, pool: pool)
        } else if let rank = selectedRank {
            body = JSONObjectBody.appending(#""data_parallel_rank":\#(rank)"#, to: plan.body, objectIsEmpty: plan.bodyIsEmptyObject)
        }
        var head = upstreamHead(for: w, bodyLength: body.readableBytes)
        primarySpan = traceCall(to: w, head: &head, bootstrapRoom: room)
        let primary = UpstreamCall(to: w.url, head: head, body: body, pool: pool)
        // Both halves are counted and known before either is sent: a call can fail at once (in
        // `start`), and the machine then ends both halves of the attempt.
        let primaryStart = w.attemptStarted(rank: selectedRank, now: plan.routing.now)
        let prefillStart = p?.attemptStarted(rank: prefillChoice?.rank, now: now)
        if primaryStart.wasIdle || prefillStart?.wasIdle == true { state.workerBecameBusy() }
        sent(to: w, breaker: primaryStart.breaker)
        if let p, let prefillStart { sent(to: p, breaker: prefillStart.breaker) }
        primaryCall = primary
        prefillCall = prefill
        primaryWorker = w
        prefillWorker = p
        prefill?.start(delegate: self, timeout: timeout)
        primary.start(delegate: self, timeout: timeout)  // nothing, if that failure closed it
    }

    /// An attempt's half counted on its worker; the first probe of an open breaker is a
    /// transition to half-open.
    private func sent(to w: Worker, breaker: CircuitBreaker.Transition?) {
        state.metrics.sentToWorker(w.url.canonical, model: w.modelID ?? "unknown")
        if let breaker { state.metrics.breakerTransition(worker: w.url.canonical, breaker) }
    }

    /// The client's head as a worker is sent it.
    func upstreamHead(for w: Worker, bodyLength: Int) -> HTTPRequestHead {
        UpstreamHeaders.request(plan.head, host: w.url.hostHeader, bodyLength: bodyLength, requestID: plan.requestID,
                                bearer: w.apiKey ?? state.config.apiKey, clientAddress: plan.clientAddress)
    }

    /// The bodies of a PD attempt's halves. Both get the prefill's address and a fresh room per
    /// attempt; with --dp-aware each half its rank (`routed_dp_rank`) and the decode half the
    /// prefill's (`disagg_prefill_dp_rank`: where its KV cache is).
    func pdBodies(prefill p: Worker, batchSize: Int?) -> (prefill: ByteBuffer, decode: ByteBuffer, room: UInt64?) {
        let fields = BootstrapFields(host: p.url.host, port: p.bootstrapPort, batchSize: batchSize, using: &rng)
        let shared = fields.inserted(into: plan.body, objectIsEmpty: plan.bodyIsEmptyObject)
        var prefillBody = shared, decodeBody = shared
        if let rank = prefillChoice?.rank {
            prefillBody = JSONObjectBody.appending(#""routed_dp_rank":\#(rank)"#, to: prefillBody, objectIsEmpty: false)
            decodeBody = JSONObjectBody.appending(#""disagg_prefill_dp_rank":\#(rank)"#, to: decodeBody, objectIsEmpty: false)
        }
        if let rank = selectedRank { decodeBody = JSONObjectBody.appending(#""routed_dp_rank":\#(rank)"#, to: decodeBody, objectIsEmpty: false) }
        return (prefillBody, decodeBody, fields.rooms.first)
    }

    /// Ends the primary half exactly as the machine says: in-flight count, breaker, connection.
    func endPrimary(_ end: Machine.AttemptEnd) {
        keepaliveTimer?.cancel()
        keepaliveTimer = nil
        settle(end, rank: selectedRank, call: primaryCall)
        Self.endCallSpan(primarySpan, call: primaryCall, failed: !end.breakerSuccess)
        primarySpan = nil
        let call = primaryCall
        primaryCall = nil
        dispose(call, end.connection)
    }

    /// Ends the prefill half likewise; with `return_logprob` its lists (none unless it
    /// answered 2xx) are merged in.
    func endPrefill(_ end: Machine.AttemptEnd) {
        settle(end, rank: prefillChoice?.rank, call: prefillCall)
        Self.endCallSpan(prefillSpan, call: prefillCall, failed: !end.breakerSuccess)
        prefillSpan = nil
        let call = prefillCall
        prefillCall = nil
        if let call {
            state.metrics.pdPrefillDuration(seconds: Double((NIODeadline.now() - call.startedAt).nanoseconds) / 1e9)
            if !end.breakerSuccess { state.metrics.pdPrefillFailure(worker: call.worker.canonical, reason: Self.failureReason(call)) }
        }
        dispose(call, end.connection)
        if logprobs != nil {
            let ready = logprobs!.prefillHalfEnded()
            if !ready.isEmpty { appendToBurst(ByteBuffer(bytes: ready)) }
        }
    }

    /// A half's books on its worker, its outcome counted; a breaker transition it causes is
    /// counted and logged.
    private func settle(_ end: Machine.AttemptEnd, rank: Int?, call: UpstreamCall?) {
        let w = end.target
        state.metrics.attemptEnded(worker: w.url.canonical, workerType: w.workerType, success: end.breakerSuccess,
                                   errorType: end.breakerSuccess ? nil : Self.errorType(call))
        guard let change = w.attemptEnded(rank: rank, success: end.breakerSuccess, now: state.nowMs()) else { return }
        state.metrics.breakerTransition(worker: w.url.canonical, change)
        state.log(.workers).warning("circuit breaker \(change.to.rawValue)", metadata: ["worker": "\(w.url.canonical)", "from": "\(change.from.rawValue)"])
        MeshBridge.breakerChanged(w, to: change.to, state: state)
    }

    /// For `smg_pd_prefill_failures_total`: a 5xx answer, the deadline (its own, or the
    /// attempt's while it had not answered), or a transport error.
    static func failureReason(_ call: UpstreamCall) -> String {
        switch errorType(call) {
        case "backend_error": "status_\(call.status)"
        case "timeout": "timeout"
        default: "transport"
        }
    }

    private func dispose(_ call: UpstreamCall?, _ connection: Machine.ConnectionDisposition) {
        switch connection {
        case .release: call?.release(reusable: true)
        case .close: call?.close()
        case .none: break
        }
    }

    func apiError(_ failure: Machine.Failure, primary: Worker?, prefill: Worker?) -> (APIError, HTTPHeaders) {
        var extra = HTTPHeaders()
        var pd = false
        if case .prefillDecode = plan.kind { pd = true }
        func role(_ half: Machine.Half) -> String { half == .prefill ? "prefill" : "decode" }
        let model = plan.model.map { " for model \($0)" } ?? ""
        switch failure {
        case .rateLimited:
            extra.add(name: "retry-after", value: String(state.admission.retryAfterSeconds))
            return (.rateLimited, extra)
        case .queueTimeout: return (.queueTimeout(state.config.admission.queueTimeoutMs / 1000), extra)
        case .modelNotFound: return (.modelNotFound(plan.model ?? ""), extra)
        case .noWorkers(let half):
            guard pd else { return (.noWorkers(plan.model), extra) }
            return (APIError(half == .prefill ? .noPrefillWorkers : .noDecodeWorkers, "no healthy \(role(half)) worker\(model) is available"), extra)
        case .workersOverloaded(let half):
            let retry = state.config.workerLoad.retryAfterSecs
            extra.add(name: "retry-after", value: String(retry))
            let which = pd ? "every \(role(half)) worker" : "every worker"
            return (APIError(.workerOverloadProtectionShed,
                             "\(which)\(model) is overloaded (its queue or KV cache is over the thresholds); retry after \(retry) s"), extra)
        case .upstreamTimeout(let half):
            let error = APIError.upstreamTimeout(state.config.requestTimeoutSecs)
            guard pd else { return (error, extra) }
            return (APIError(half == .prefill ? .prefillTimeout : .decodeTimeout, error.message), extra)
        case .upstreamFailed(let half):
            let worker = half == .prefill ? prefill : primary
            guard pd else { return (.upstreamFailed("worker \(worker?.url.canonical ?? "?") failed"), extra) }
            return (APIError(half == .prefill ? .prefillFailed : .decodeFailed, "the \(role(half)) half of the request failed (\(worker?.url.canonical ?? "?")); the KV cache never reached a decode worker"), extra)
        }
    }
}
