import NIOHTTP1

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

extension Tenancy {
    /// The caller's tenant: the authenticated one, else the trusted header's (when configured
    /// and well-formed), else none.
    static func of(_ principal: Principal?, headers: HTTPHeaders, settings: SecuritySettings) -> String? {
        if let tenant = principal?.tenant { return tenant }
        guard let name = settings.tenantHeader, let value = headers.first(name: name), isValid(value) else { return nil }
        return value
    }
}
