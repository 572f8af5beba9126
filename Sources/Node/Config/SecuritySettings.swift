import Logging
/// Who may call what, as configured by the Security flags. Built and validated with the rest of
/// `RouterConfig`; every error names its flag.
public struct SecuritySettings: Sendable {
    /// One `--control-plane-api-keys` entry, `id:name:role:key`.
    public struct ControlKey: Sendable {
        public let id: String
        public let name: String
        public let role: Role
        public let key: String
    }

    /// `--jwt-*`: tokens from one OIDC issuer.
    public struct JWT: Sendable {
        public var issuer: String
        public var audience: String
        /// Where the signing keys are; discovered from the issuer when not given.
        public var jwksURI: String?
        /// The claim holding the caller's role(s): a string or an array of strings; a dotted
        /// path (`realm_access.roles`) reaches into nested objects.
        public var roleClaim: String
        /// IdP role → gateway role. Without mappings, the literal roles `admin` and `user` count.
        public var roleMapping: [String: Role]
        /// `--jwt-allow-http`: fetch keys over plain HTTP from another host.
        public var allowPlainHTTP = false
    }

    /// `--api-key`: inference routes need it; it also guards the control plane when no
    /// control-plane credential is configured.
    public var apiKey: String?
    public var controlKeys: [ControlKey]
    /// `--tenant-api-key TENANT_ID:KEY`: inference keys beside `--api-key`, each its tenant's.
    public var tenantKeys: [(tenant: String, key: String)] = []
    /// `--trust-tenant-header`: the header (`--tenant-header-name`, lowercased) that names the
    /// caller's tenant; nil when the header is not trusted.
    public var tenantHeader: String?
    public var jwt: JWT?
    /// One line per control-plane decision (`--disable-audit-logging` turns it off).
    public var auditLogging: Bool
    /// `--audit-log-level`: the audit log's own level (info; debug adds allowed reads).
    public var auditLevel: Logger.Level = .info

    /// Control routes check control-plane keys or JWTs; when neither is configured, `--api-key`.
    public var controlPlaneHasOwnCredentials: Bool { !controlKeys.isEmpty || jwt != nil }
    /// Nothing guards anything: the drop-in default, warned about on non-loopback addresses.
    public var isOpen: Bool { apiKey == nil && !controlPlaneHasOwnCredentials && tenantKeys.isEmpty }
    /// Inference routes need a key: `--api-key` or a tenant's.
    public var inferenceNeedsKey: Bool { apiKey != nil || !tenantKeys.isEmpty }

    init(_ f: ResolvedFlags) throws(ConfigError) {
        apiKey = f.string("api-key").flatMap { $0.isEmpty ? nil : $0 }
        if let key = apiKey { try Self.headerSafe(key, flag: "--api-key") }
        controlKeys = try f.list("control-plane-api-keys").map { entry throws(ConfigError) in try Self.controlKey(entry) }
        var ids = Set<String>()
        for k in controlKeys where !ids.insert(k.id).inserted {
            throw ConfigError("--control-plane-api-keys: id '\(k.id)' is given twice")
        }
        auditLogging = !f.bool("disable-audit-logging")
        switch f.stringWithDefault("audit-log-level").lowercased() {
        case "debug": auditLevel = .debug
        case "info": auditLevel = .info
        case "warn", "warning": auditLevel = .warning
        case let other: throw ConfigError("--audit-log-level \(other): expected debug, info or warn")
        }
        tenantKeys = try f.list("tenant-api-key").map { entry throws(ConfigError) in
            let parts = entry.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2, Tenancy.isValid(parts[0]), !parts[1].isEmpty else {
                throw ConfigError("--tenant-api-key: expected TENANT_ID:KEY (a tenant id of 1 to \(Tenancy.maxLength) characters, no ':')")
            }
            try Self.headerSafe(parts[1], flag: "--tenant-api-key")
            return (parts[0], parts[1])
        }
        var keys = Set(tenantKeys.map(\.key))
        if let apiKey { keys.insert(apiKey) }
        guard keys.count == tenantKeys.count + (apiKey == nil ? 0 : 1) else {
            throw ConfigError("--tenant-api-key: a key is given twice (to two tenants, or also as --api-key): it must name one tenant")
        }
        let header = f.stringWithDefault("tenant-header-name").lowercased()
        guard !header.isEmpty, header.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: ":") }) else {
            throw ConfigError("--tenant-header-name '\(header)': expected a header name")
        }
        tenantHeader = f.bool("trust-tenant-header") ? header : nil
        let jwtFlags = ["jwt-issuer", "jwt-audience", "jwt-jwks-uri", "jwt-role-mapping"].filter { f.isExplicit($0) }
        guard !jwtFlags.isEmpty else { jwt = nil; return }
        guard let issuer = f.string("jwt-issuer"), !issuer.isEmpty else {
            throw ConfigError("--\(jwtFlags[0]) needs --jwt-issuer (the OIDC issuer whose tokens are accepted)")
        }
        guard let audience = f.string("jwt-audience"), !audience.isEmpty else {
            throw ConfigError("--jwt-issuer needs --jwt-audience: a token is accepted only when it was issued for this gateway")
        }
        var mapping: [String: Role] = [:]
        for entry in f.list("jwt-role-mapping") {
            let parts = entry.trimmingCharacters(in: [" "]).split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, let role = Role(rawValue: parts[1]) else {
                throw ConfigError("--jwt-role-mapping '\(entry)': expected IdpRole=admin or IdpRole=user")
            }
            mapping[parts[0]] = role
        }
        let roleClaim = f.stringWithDefault("jwt-role-claim")
        guard !roleClaim.isEmpty else { throw ConfigError("--jwt-role-claim: must name a claim") }
        let jwksURI = f.string("jwt-jwks-uri").flatMap { $0.isEmpty ? nil : $0 }
        // Where the keys will be fetched from must be reachable by this build.
        let flag = jwksURI == nil ? "jwt-issuer" : "jwt-jwks-uri"
        let keysURL: ResourceURL
        do { keysURL = try ResourceURL(parsing: jwksURI ?? issuer) } catch {
            throw ConfigError("--\(flag) (given by \(f.source(flag))): \(error.message)")
        }
        let allowPlainHTTP = f.bool("jwt-allow-http")
        guard keysURL.isSafeForKeys(allowPlainHTTP: allowPlainHTTP) else {
            throw ConfigError("--\(flag) \(keysURL.description): the signing keys would come over plain HTTP from another host, where anyone on the path can replace them and sign their own tokens; use https://, or pass --jwt-allow-http to accept that")
        }
        jwt = JWT(issuer: issuer, audience: audience, jwksURI: jwksURI, roleClaim: roleClaim, roleMapping: mapping, allowPlainHTTP: allowPlainHTTP)
    }

    static func controlKey(_ raw: String) throws(ConfigError) -> ControlKey {
        let entry = raw.trimmingCharacters(in: [" ", "\t"])
        let parts = entry.split(separator: ":", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 4, !parts[0].isEmpty, !parts[3].isEmpty else {
            throw ConfigError("--control-plane-api-keys: expected id:name:role:key (got an entry with \(parts.count) part(s))")
        }
        guard let role = Role(rawValue: parts[2]) else {
            throw ConfigError("--control-plane-api-keys: key '\(parts[0])' has role '\(parts[2])'; expected admin or user")
        }
        try headerSafe(parts[3], flag: "--control-plane-api-keys")
        return ControlKey(id: parts[0], name: parts[1], role: role, key: parts[3])
    }

    /// A secret that is sent or compared as a header value may not hold control characters.
    static func headerSafe(_ value: String, flag: String) throws(ConfigError) {
        guard HeaderValue.isSafe(value) else { throw ConfigError("\(flag): the key holds a control character (CR, LF, NUL, …)") }
    }
}
