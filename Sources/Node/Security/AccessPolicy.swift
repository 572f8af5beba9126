import NIOHTTP1

/// What a route demands of its caller, decided from the request head alone so that a refused
/// request is answered before any of its body is read.
enum Access: Equatable {
    /// Health probes and CORS preflights: a load balancer or browser calls them without credentials.
    case open
    /// Inference and what is forwarded to workers: `--api-key` when set.
    case inference
    /// The control plane, with the least role it needs.
    case control(Role)

    init(_ route: Route) {
        switch route {
        case .health, .readiness, .corsPreflight, .notFound, .methodNotAllowed, .dashboard, .dashboardScript: self = .open
        case .inference, .proxyToAnyWorker, .models, .conversations, .responses: self = .inference
        case .listWorkers, .getWorker, .legacyListWorkers, .getLoads, .meshStatus, .dashboardStats: self = .control(.user)
        case .addWorker, .updateWorker, .deleteWorker, .legacyAddWorker, .legacyRemoveWorker, .flushCache: self = .control(.admin)
        }
    }
}

/// The outcome of checking a request head against the configured credentials.
enum AccessDecision {
    case allowed(Principal?)
    case denied(APIError, Principal?)
    /// A JWT: its signature is checked off the event loop; the answer comes back later.
    case verifyToken(String)
}

/// Checks credentials from the `Authorization: Bearer …` header. Pure except for the JWT case,
/// which it hands back to the caller to verify asynchronously.
struct AccessPolicy: Sendable {
    let settings: SecuritySettings
    private let apiKey: SecretMatcher<Void>
    private let controlKeys: SecretMatcher<Principal>
    private let tenantKeys: SecretMatcher<Principal>

    init(_ settings: SecuritySettings) {
        self.settings = settings
        apiKey = SecretMatcher(settings.apiKey.map { [($0, ())] } ?? [])
        controlKeys = SecretMatcher(settings.controlKeys.map { ($0.key, Principal(id: $0.id, name: $0.name, role: $0.role, method: .controlKey)) })
        tenantKeys = SecretMatcher(settings.tenantKeys.map { ($0.key, Principal(id: $0.tenant, name: $0.tenant, role: .user, method: .tenantKey, tenant: $0.tenant)) })
    }

    func decide(_ access: Access, headers: HTTPHeaders) -> AccessDecision {
        let token = Self.bearer(headers)
        switch access {
        case .open:
            return .allowed(nil)
        case .inference:
            guard settings.inferenceNeedsKey else { return .allowed(nil) }
            guard let token else { return .denied(.unauthorized, nil) }
            if let tenant = tenantKeys.match(token) { return .allowed(tenant) }
            guard apiKey.match(token) != nil else { return .denied(.unauthorized, nil) }
            return .allowed(nil)
        case .control(let needed):
            guard settings.controlPlaneHasOwnCredentials else {
                // Only --api-key (it guards everything) or nothing at all (open, as before).
                if apiKey.isEmpty { return .allowed(.anonymous) }
                guard let token, apiKey.match(token) != nil else { return .denied(.controlUnauthorized, nil) }
                return .allowed(.apiKeyHolder)
            }
            guard let token else { return .denied(.controlUnauthorized, nil) }
            if let principal = controlKeys.match(token) { return authorize(principal, needs: needed) }
            if settings.jwt != nil, JWTAuthority.looksLikeJWT(token) { return .verifyToken(String(token)) }
            return .denied(.controlUnauthorized, nil)
        }
    }

    /// The role check, once the caller is known.
    func authorize(_ principal: Principal, needs role: Role) -> AccessDecision {
        principal.role >= role ? .allowed(principal) : .denied(.forbidden(principal, needs: role), principal)
    }

    /// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
    static func bearer(_ headers: HTTPHeaders) -> Substring? {
        guard let value = headers.first(name: "authorization") else { return nil }
        let trimmed = value.drop { $0 == " " }
        guard trimmed.utf8.count > 7, trimmed.prefix(7).lowercased() == "bearer " else { return nil }
        let token = trimmed.dropFirst(7).drop { $0 == " " }
        return token.isEmpty ? nil : token
    }
}
