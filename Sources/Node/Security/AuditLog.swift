import Logging
import NIOHTTP1

/// One log line per control-plane decision: who (principal id, role, how they authenticated),
/// what (method and route, with its target), the result and the request id; never a secret.
/// Changes and refusals are logged at info; allowed reads at debug, so a dashboard polling
/// `/ha/status` does not fill the log with one line per poll.
struct AuditLog: Sendable {
    let enabled: Bool
    let logger: Logger

    func allowed(_ principal: Principal, needs role: Role, head: HTTPRequestHead, requestID: String) {
        guard enabled else { return }
        record(principal, head: head, result: "allowed", reason: nil, requestID: requestID, level: role == .admin ? .info : .debug)
    }

    func denied(_ principal: Principal?, error: APIError, head: HTTPRequestHead, requestID: String) {
        guard enabled else { return }
        record(principal, head: head, result: "denied", reason: error.code, requestID: requestID, level: .info)
    }

    private func record(_ principal: Principal?, head: HTTPRequestHead, result: String, reason: String?, requestID: String, level: Logger.Level) {
        guard logger.logLevel <= level else { return }
        var metadata: Logger.Metadata = [
            "principal": "\(principal?.id ?? "unauthenticated")",
            "role": "\(principal?.role.rawValue ?? "none")",
            "auth": "\(principal?.method.rawValue ?? "none")",
            "route": "\(head.method) \(Self.target(head.uri))",
            "result": "\(result)",
            "request_id": "\(requestID)",
        ]
        if let reason { metadata["reason"] = "\(reason)" }
        logger.log(level: level, "audit", metadata: metadata)
    }

    /// The path with the query (a legacy `?url=` names the target worker), cut to a sane length.
    private static func target(_ uri: String) -> String {
        uri.utf8.count <= 512 ? uri : String(uri.prefix(512)) + "…"
    }
}
