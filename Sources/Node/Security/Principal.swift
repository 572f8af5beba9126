/// A control-plane role. `admin` may change the fleet; `user` may only read it.
public enum Role: String, Sendable, Comparable, CaseIterable {
    case user, admin
    public static func < (a: Role, b: Role) -> Bool { a == .user && b == .admin }
}

/// Who a request was authenticated as: what the audit log names and what authorization checks.
public struct Principal: Sendable, Equatable {
    /// How the request proved who it is.
    public enum Method: String, Sendable {
        /// `--control-plane-api-keys`.
        case controlKey = "control_key"
        /// A JWT from the configured issuer.
        case jwt
        /// `--api-key`, when it is the only credential configured.
        case apiKey = "api_key"
        /// No authentication configured at all (the drop-in default).
        case anonymous
        /// `--tenant-api-key`: an inference key that names a tenant.
        case tenantKey = "tenant_key"
    }
    public let id: String
    public let name: String
    public let role: Role
    public let method: Method
    /// The tenant this caller stores and reads history as (`Tenancy`).
    public var tenant: String? = nil

    static let anonymous = Principal(id: "anonymous", name: "anonymous", role: .admin, method: .anonymous)
    static let apiKeyHolder = Principal(id: "api-key", name: "api-key holder", role: .admin, method: .apiKey)
}

extension APIError {
    static func forbidden(_ principal: Principal, needs role: Role, detail: String? = nil) -> APIError {
        APIError(.insufficientRole, detail ?? "'\(principal.id)' has role \(principal.role.rawValue); this route needs \(role.rawValue)")
    }
}
