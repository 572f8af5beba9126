/// An absolute `http(s)://host[:port]/path` URL of something the router fetches for itself (the
/// OIDC discovery document, a JWKS): the server to connect to plus the request target.
struct ResourceURL: Sendable, Equatable {
    let server: WorkerURL
    /// Path and query, at least "/".
    let target: String

    init(parsing raw: String) throws(ConfigError) {
        guard raw.utf8.count <= 2048, HeaderValue.isSafe(raw), !raw.contains(" ") else {
            throw ConfigError("URL '\(raw.prefix(80))': too long or holds spaces or control characters")
        }
        let scheme = raw.hasPrefix("https://") ? "https://" : "http://"
        guard raw.hasPrefix(scheme) else { throw ConfigError("URL '\(raw)': expected http(s)://host[:port]/path") }
        let rest = raw.dropFirst(scheme.count)
        let slash = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        server = try WorkerURL(parsing: scheme + rest[..<slash])
        let path = rest[slash...]
        target = path.isEmpty ? "/" : (path.hasPrefix("?") ? "/" + path : String(path))
    }

    /// `base` with `suffix` appended to its path (`issuer` + `/.well-known/openid-configuration`).
    func appending(path suffix: String) -> ResourceURL {
        ResourceURL(server: server, target: (target.hasSuffix("/") ? String(target.dropLast()) : target) + suffix)
    }

    private init(server: WorkerURL, target: String) {
        self.server = server
        self.target = target
    }

    var description: String { server.canonical + target }

    /// Whether what is fetched from here can be trusted to come from the server itself: over
    /// TLS, or from this host. Signing keys over plain HTTP elsewhere can be swapped on the path.
    func isSafeForKeys(allowPlainHTTP: Bool) -> Bool {
        server.isTLS || allowPlainHTTP || AdvertiseAddress.isLoopback(server.host)
    }
}
