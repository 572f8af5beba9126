/// A worker address as the router connects to it: `http://host:port` or `https://host:port`
/// (TLS, verified against `--ca-cert-paths`), IPv6 in brackets.
public struct WorkerURL: Sendable, Hashable {
    public let host: String
    public let port: Int
    /// `https://`: the connection is TLS.
    public let isTLS: Bool
    /// The value of the Host header sent upstream (computed once: it is used per request).
    public let hostHeader: String
    /// Canonical spelling, used as the worker's identity in the registry and in metric labels.
    public let canonical: String

    /// Longer URLs are refused: they end up in logs, metric labels and mesh messages.
    public static let maxLength = 2048

    public init(parsing raw: String) throws(ConfigError) {
        guard raw.utf8.count <= Self.maxLength else { throw ConfigError("worker URL '\(raw.prefix(60))…': longer than \(Self.maxLength) bytes") }
        var rest = Substring(raw.trimmingCharacters(in: [" ", "\t"]))
        var tls = false
        if rest.hasPrefix("http://") {
            rest = rest.dropFirst(7)
        } else if rest.hasPrefix("https://") {
            rest = rest.dropFirst(8)
            tls = true
        } else if rest.hasPrefix("grpc://") {
            throw ConfigError("worker URL '\(raw)': gRPC workers are not built yet")
        } else if rest.contains("://") {
            throw ConfigError("worker URL '\(raw)': expected http://host:port or https://host:port")
        }
        while rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.contains("/"), !rest.contains("?"), !rest.isEmpty else {
            throw ConfigError("worker URL '\(raw)': expected http://host:port without a path")
        }
        var h: Substring
        var p: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw ConfigError("worker URL '\(raw)': unclosed [ in IPv6 address") }
            h = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") { p = after.dropFirst() } else if !after.isEmpty { throw ConfigError("worker URL '\(raw)': junk after the address") }
        } else if let colon = rest.lastIndex(of: ":") {
            h = rest[..<colon]
            p = rest[rest.index(after: colon)...]
        } else {
            h = rest
        }
        guard !h.isEmpty, h.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":" || $0 == "_") }) else {
            throw ConfigError("worker URL '\(raw)': invalid host")
        }
        let port: Int
        if let p {
            guard let n = Int(p), (1...65535).contains(n) else { throw ConfigError("worker URL '\(raw)': invalid port '\(p)'") }
            port = n
        } else {
            port = tls ? 443 : 80
        }
        self.host = String(h)
        self.port = port
        self.isTLS = tls
        self.hostHeader = (h.contains(":") ? "[\(h)]" : String(h)) + ":\(port)"
        self.canonical = (tls ? "https://" : "http://") + hostHeader
    }

    /// The name to send as SNI and to verify the certificate against; nil for an IP address,
    /// whose certificate is verified against its IP SANs.
    var tlsServerName: String? { TLSServerName.of(host: host) }

    static func validate(_ raw: String, flag: String) throws(ConfigError) -> String {
        do { return try WorkerURL(parsing: raw).canonical } catch { throw ConfigError("\(flag): \(error.message)") }
    }
}

/// What a TLS client sends as SNI and verifies the certificate against, for a host it connects to
/// (a worker, a Redis server): the name, or nil for an IP address, whose certificate is verified
/// against its IP SANs (SNI carries no addresses).
enum TLSServerName {
    static func of(host: String) -> String? {
        if host.contains(":") { return nil }
        let labels = host.split(separator: ".")
        if labels.count == 4, labels.allSatisfy({ UInt8($0) != nil }) { return nil }
        return host
    }
}
