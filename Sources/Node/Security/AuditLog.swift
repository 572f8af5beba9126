import Logging
import NIOHTTP1

/// One log line per control-plane decision: who (principal id, role, how they authenticated),
/// what (method and route, with its target), the result and the request id; never a secret.
/// Changes and refusals are logged at info; allowed reads at debug, so a dashboard polling
/// `/ha/status` does not fill the log with one line per poll. Also every deletion of stored
/// history (who, as which tenant, and whether it was found) and every change to the fleet
/// that another router's write made here (with that router's name).
///
/// Its level is its own (`--audit-log-level`, info): `--log-level warn` quiets the router, not
/// the record of who changed what.
struct AuditLog: Sendable {
    let enabled: Bool
    let logger: Logger

    init(enabled: Bool, logger: Logger, level: Logger.Level = .info) {
        self.enabled = enabled
        var own = logger
        own.logLevel = level
        self.logger = own
    }

    func allowed(_ principal: Principal, needs role: Role, head: HTTPRequestHead, requestID: String) {
        guard enabled else { return }
        record(principal, head: head, result: "allowed", reason: nil, requestID: requestID, level: role == .admin ? .info : .debug)
    }

    func denied(_ principal: Principal?, error: APIError, head: HTTPRequestHead, requestID: String) {
        guard enabled else { return }
        record(principal, head: head, result: "denied", reason: error.code.rawValue, requestID: requestID, level: .info)
    }

    /// A DELETE of a conversation, an item or a response, once answered.
    func historyDeletion(_ principal: Principal?, tenant: String?, head: HTTPRequestHead, status: Int, requestID: String) {
        guard enabled, logger.logLevel <= .info else { return }
        logger.info("audit", metadata: [
            "principal": "\(principal?.id ?? "unauthenticated")", "auth": "\(principal?.method.rawValue ?? "none")",
            "tenant": "\(tenant ?? "none")", "route": "\(head.method) \(Self.target(head.uri))",
            "result": "\(status < 300 ? "deleted" : (status == 404 ? "not_found" : "failed"))", "status": "\(status)", "request_id": "\(requestID)",
        ])
    }

    /// Another router's replicated write added, changed or removed a worker here.
    func fleetChangeFromMesh(_ change: String, worker: String, peer: String) {
        guard enabled, logger.logLevel <= .info else { return }
        logger.info("audit", metadata: ["change": "\(change)", "worker": "\(worker)", "peer": "\(peer)", "via": "mesh"])
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
