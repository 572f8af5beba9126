import NIOHTTP1
import Tracing

/// The spans an exchange makes under its request's (`RequestTrace`), when tracing is on: the
/// wait in the admission queue, each choice of a worker, and each call to a worker (the whole
/// request, or a PD half), whose context goes to the worker as its `traceparent`.
extension Exchange {
    /// Opens the admission-queue span when the request had to wait.
    func queuedForAdmission() {
        guard let trace = plan.trace, admissionTicket != nil else { return }
        admissionSpan = trace.span("admission queue")
    }

    /// The wait ended: `admitted`, `queue_full`, `timed_out` or `client_left`.
    func admissionEnded(_ result: String) {
        guard let span = admissionSpan else { return }
        admissionSpan = nil
        span.attributes["smg.admission.result"] = result
        if result != "admitted" { span.setStatus(SpanStatus(code: .error, message: result)) }
        span.end()
    }

    /// A worker (or a PD half's) was chosen: a span of the choice, with why.
    func traceChoice(_ choice: WorkerRegistry.Choice, startedAt: DefaultTracerClock.Instant?) {
        guard let trace = plan.trace, let startedAt else { return }
        let span = trace.tracer.startSpan("select worker", context: trace.server.context, ofKind: .internal, at: startedAt)
        span.updateAttributes { a in
            a["smg.policy"] = choice.policy.rawValue
            a["smg.worker"] = choice.worker.url.canonical
            a["smg.worker.role"] = choice.worker.workerType
            a["smg.decision"] = choice.reason.rawValue
            if let rank = choice.rank { a["smg.dp_rank"] = rank }
            if let ratio = choice.matchRatio { a["smg.cache.match_ratio"] = ratio }
            if machine.retries > 0 { a["http.request.resend_count"] = machine.retries }
        }
        span.end()
    }

    /// A span for a call about to go to `w`, its context put on the call's head.
    func traceCall(to w: Worker, head: inout HTTPRequestHead, bootstrapRoom: UInt64?) -> (any Span)? {
        guard let trace = plan.trace else { return nil }
        let span = trace.span(head.method.rawValue, kind: .client)
        span.updateAttributes { a in
            a["http.request.method"] = head.method.rawValue
            a["server.address"] = w.url.host
            a["server.port"] = w.url.port
            a["url.full"] = w.url.canonical + head.uri
            a["smg.worker.role"] = w.workerType
            a["smg.breaker_state"] = w.breakerState.rawValue
            if machine.retries > 0 { a["http.request.resend_count"] = machine.retries }
            if let bootstrapRoom { a["smg.pd.bootstrap_room"] = String(bootstrapRoom) }
        }
        trace.propagate(span, into: &head.headers)
        return span
    }

    /// A call ended: its answer's status, or why there was none.
    static func endCallSpan(_ span: (any Span)?, call: UpstreamCall?, failed: Bool) {
        guard let span else { return }
        let status = (call?.status ?? 0) > 0 ? call!.status : nil
        RequestTrace.endCall(span, status: status, errorType: failed && (status ?? 0) < 500 ? errorType(call) : nil)
    }
}
