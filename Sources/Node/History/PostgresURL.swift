/// `--postgres-db-url postgres://user[:password]@host[:port]/database[?sslmode=…]` (also
/// `postgresql://`), as libpq spells it. `sslmode`: `disable`; `prefer` (the default: TLS when
/// the server offers it, unverified, as libpq does); `require` (TLS, unverified); `verify-full`
/// (TLS, the chain checked against `--ca-cert-paths` or the system store and the host name too,
/// with `--client-cert-path` for a server that asks for one).
public struct PostgresURL: Sendable, Equatable {
    public enum SSLMode: String, Sendable, Equatable, CaseIterable {
        case disable, prefer, require
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode

    public init(parsing raw: String) throws(ConfigError) {
        var rest: Substring
        if raw.hasPrefix("postgres://") {
            rest = raw.dropFirst("postgres://".count)
        } else if raw.hasPrefix("postgresql://") {
            rest = raw.dropFirst("postgresql://".count)
        } else {
            throw Self.problem(raw, "expected postgres://user[:password]@host[:port]/database[?sslmode=disable|prefer|require|verify-full]")
        }
        sslMode = .prefer
        if let question = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: question)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2, parts[0] == "sslmode" else { throw Self.problem(raw, "unknown option '\(pair.prefix(40))' (only sslmode)") }
                guard let mode = SSLMode(rawValue: String(parts[1])) else {
                    throw Self.problem(raw, "sslmode '\(parts[1].prefix(40))': expected \(SSLMode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                sslMode = mode
            }
            rest = rest[..<question]
        }
        guard let at = rest.lastIndex(of: "@") else { throw Self.problem(raw, "name the user: postgres://user@host/database") }
        let credentials = rest[..<at]
        rest = rest[rest.index(after: at)...]
        if let colon = credentials.firstIndex(of: ":") {
            user = RequestTarget.percentDecode(credentials[..<colon])
            password = RequestTarget.percentDecode(credentials[credentials.index(after: colon)...])
        } else {
            user = RequestTarget.percentDecode(credentials)
        }
        guard !user.isEmpty, user.utf8.count <= 63, HeaderValue.isSafe(user) else { throw Self.problem(raw, "the user must be 1 to 63 bytes without control characters") }
        guard let slash = rest.firstIndex(of: "/") else { throw Self.problem(raw, "name the database: postgres://user@host/database") }
        database = RequestTarget.percentDecode(rest[rest.index(after: slash)...])
        guard !database.isEmpty, database.utf8.count <= 63, HeaderValue.isSafe(database) else {
            throw Self.problem(raw, "the database name must be 1 to 63 bytes without control characters")
        }
        rest = rest[..<slash]
        guard !rest.isEmpty else { throw Self.problem(raw, "the host is empty") }
        do {
            let server = try WorkerURL(parsing: "http://" + rest + (rest.contains(":") && !rest.hasSuffix("]") ? "" : ":5432"))
            host = server.host
            port = server.port
        } catch {
            throw Self.problem(raw, error.message.replacingOccurrences(of: "worker URL", with: "address"))
        }
    }

    private static func problem(_ raw: String, _ why: String) -> ConfigError { ConfigError("--postgres-db-url \(redacted(raw)): \(why)") }

    /// The URL without its password, for logs and errors.
    static func redacted(_ raw: String) -> String {
        guard let scheme = raw.range(of: "://"), let at = raw.lastIndex(of: "@"), scheme.upperBound <= at else { return raw }
        let credentials = raw[scheme.upperBound..<at]
        let user = credentials.split(separator: ":", maxSplits: 1).first.map(String.init) ?? ""
        return String(raw[..<scheme.upperBound]) + user + (credentials.contains(":") ? ":…" : "") + String(raw[at...])
    }

    public var description: String { "postgres://\(user)@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)?sslmode=\(sslMode.rawValue)" }
}
