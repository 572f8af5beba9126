import NIOCore

/// What an exchange tells the metrics: the labels its request families share, its end, and how
/// a failed call to a worker is classed.
extension Exchange {
    /// The model (bounded: the served id, `unknown` when the request names none, `other` for
    /// one no worker is known to serve), endpoint and backend type of this request: as its first
    /// decision labelled it, once there was one (its end is counted under the same labels).
    var routeLabels: RouterMetrics.RouteLabels {
        if let routedLabels { return routedLabels }
        var backend = "regular"
        if case .prefillDecode = plan.kind { backend = "pd" }
        guard let asked = plan.model, let w = choice?.worker else {
            return .of(model: plan.model, endpoint: plan.endpoint, backend: backend, registry: state.registry)
        }
        return RouterMetrics.RouteLabels(model: w.modelID == asked ? asked : "other", endpoint: plan.endpoint, backend: backend)
    }

    /// The request is over (answered, failed, or its client left): its duration, once.
    func recordEnd() {
        guard plan.isInference, !endRecorded else { return }
        endRecorded = true
        state.metrics.routeEnded(routeLabels, seconds: Double((NIODeadline.now() - startedAt).nanoseconds) / 1e9)
    }

    /// `smg_worker_errors_total`'s `error_type` for a half that failed: a 5xx answer
    /// (`backend_error`), the deadline (`timeout`), or the connection (`connection_error`).
    static func errorType(_ call: UpstreamCall?) -> String {
        guard let call else { return "connection_error" }
        if call.status >= 500 { return "backend_error" }
        switch call.failure {
        case nil, UpstreamError.timedOut?: return "timeout"
        default: return "connection_error"
        }
    }
}
