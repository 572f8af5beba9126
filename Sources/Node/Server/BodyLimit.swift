/// How much body a request may carry, decided from its head (route and access) before any of
/// the body is read. Each kind of route gets what it needs and no more: what a stranger may
/// send without credentials is tiny, what the router parses into a tree itself is bounded below
/// what it merely forwards.
struct BodyLimit: Equatable {
    var bytes: Int
    /// What sets it, as the 413 answer names it.
    var source: String

    /// Health probes and CORS preflights take no body; anyone may call them.
    static let open = 4 << 10
    /// Control routes carry small JSON documents.
    static let control = 1 << 20

    static func of(_ route: Route, access: Access, config: RouterConfig) -> BodyLimit {
        let payload = BodyLimit(bytes: config.maxPayloadSize, source: "--max-payload-size")
        switch (route, access) {
        case (_, .open): return BodyLimit(bytes: min(open, payload.bytes), source: "the limit of open routes")
        case (_, .control): return BodyLimit(bytes: min(control, payload.bytes), source: "the limit of control routes")
        case (.responses, _), (.conversations, _):
            let own = BodyLimit(bytes: config.maxResponsesPayloadSize, source: "--max-responses-payload-size")
            return own.bytes <= payload.bytes ? own : payload
        default: return payload
        }
    }
}

extension APIError {
    static func payloadTooLarge(_ limit: BodyLimit) -> APIError {
        APIError(.payloadTooLarge, "request body exceeds \(limit.source) (\(limit.bytes) bytes)")
    }
}
