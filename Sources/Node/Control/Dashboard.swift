import NIOHTTP1

/// `GET /dashboard`: a live page of this router and its cluster, served by the router itself
/// (no external script, style or font). The page holds no data: it polls `/dashboard/stats`,
/// `/workers` and `/ha/status`, which need the control plane's read role when auth is
/// configured (the page asks for a key when they answer 401 and keeps it in the tab's session
/// storage), so the page and its script are open like `/health`.
enum Dashboard {
    /// The page, with a policy that lets it load nothing but its own script and talk to nothing
    /// but this router.
    static func page() -> ControlResponse {
        ControlResponse(body: DashboardPage.html, contentType: "text/html; charset=utf-8", headers: securityHeaders)
    }

    static func script() -> ControlResponse {
        ControlResponse(body: DashboardPage.script, contentType: "text/javascript; charset=utf-8", headers: securityHeaders)
    }

    private static let securityHeaders: HTTPHeaders = [
        "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        "x-content-type-options": "nosniff",
        "cache-control": "no-cache",
    ]

    /// `GET /dashboard/stats`: what the page shows besides the workers and the mesh: who this
    /// router is, its recent rates, admission and the history store.
    static func stats(_ state: RouterState) -> ControlResponse {
        let now = state.nowMs()
        let rates = state.rates.rates(nowMs: now)
        var historyJSON: [String: JSONValue] = ["backend": .string(state.config.history.name)]
        if let redis = (state.history as? RedisHistoryStore)?.redis {
            let usage = redis.poolUsage
            historyJSON["connections_open"] = .int(usage.open)
            historyJSON["connections_in_use"] = .int(usage.inUse)
        }
        if let memory = state.history as? MemoryHistoryStore {
            let held = memory.counts
            historyJSON["responses"] = .int(held.responses)
            historyJSON["conversations"] = .int(held.conversations)
        }
        let admission = state.admission
        let json: JSONValue = [
            "router": .string(state.config.instanceName),
            "mesh": .bool(state.mesh != nil),
            "uptime_seconds": .int(Int((now &- state.startedAtMs) / 1000)),
            "draining": .bool(state.isDraining),
            "policy": .string(state.config.policy.rawValue),
            "in_flight": .int(max(0, state.inFlight - 1)),  // not counting this request
            "rates": rates.map { r in
                ["requests_per_second": .double(r.requestsPerSecond), "server_errors_per_second": .double(r.serverErrorsPerSecond),
                 "cache_hit_ratio": r.cacheHitRatio.map { .double($0) } ?? .null, "window_seconds": .double(r.windowSeconds)]
            } ?? .null,
            "admission": ["in_flight": .int(admission.inFlight), "queued": .int(admission.queueDepth),
                          "max_concurrent_requests": state.config.admission.maxConcurrent.map { .int($0) } ?? .null,
                          "rate_limit_tokens_per_second": admission.tokenRate.map { .double($0) } ?? .null],
            "history": .object(historyJSON),
        ]
        return ControlResponse(json: json)
    }
}
