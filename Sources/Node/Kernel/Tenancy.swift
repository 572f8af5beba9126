/// Who owns what the router stores (conversations, their items, responses): the tenant of the
/// request that made it. A caller's tenant comes from the key it presented
/// (`--tenant-api-key TENANT_ID:KEY`, checked by `AccessPolicy`), or, with
/// `--trust-tenant-header`, from the header a gateway in front of the router sets
/// (`--tenant-header-name`, `x-smg-tenant-id`); a tenant key always wins over the header, so no
/// key holder can name another tenant. Another tenant's record is not found (404, not 403: its
/// existence is not confirmed); a record stored without a tenant stays readable by every
/// caller, as the reference gateway keeps it.
enum Tenancy {
    /// A tenant id: what a header may carry, bounded.
    static let maxLength = 128

    static func visible(_ owner: String?, to caller: String?) -> Bool { owner == nil || owner == caller }

    /// The sticky-session key a caller's `x-smg-routing-key` stands for. A tenant's keys are its
    /// own (`tenant` + US + key), so no caller can pin, move or follow another tenant's session,
    /// and the tenant travels with the session wherever sessions go (the mesh, Redis).
    /// A key without a tenant is unchanged (routers of an older release agree on it), unless it
    /// holds the separator itself, when it is marked by a leading separator: a tenant id is never
    /// empty and holds no control character, so no two callers' keys can meet.
    static func routingKey(_ raw: String?, tenant: String?) -> String? {
        guard let raw else { return nil }
        if let tenant { return tenant + separator + raw }
        return raw.contains(separator) ? separator + raw : raw
    }

    /// ASCII unit separator: not in a valid tenant id (`HeaderValue.isSafe` excludes controls).
    static let separator = "\u{1F}"

    static func isValid(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= maxLength && HeaderValue.isSafe(id) && !id.contains(":")
    }
}
