/// `redis://[user:password@]host[:port][/db]` (`--redis-url`).
public struct RedisURL: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var user: String?
    public var password: String?
    public var database: Int

    public init(parsing raw: String) throws(ConfigError) {
        guard raw.hasPrefix("redis://") else {
            throw ConfigError("--redis-url \(Self.redacted(raw)): expected redis://[user:password@]host[:port][/db] (rediss:// is not built)")
        }
        var rest = Substring(raw.dropFirst("redis://".count))
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                user = credentials[..<colon].isEmpty ? nil : RequestTarget.percentDecode(credentials[..<colon])
                password = RequestTarget.percentDecode(credentials[credentials.index(after: colon)...])
            } else {
                password = RequestTarget.percentDecode(credentials)
            }
        }
        database = 0
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !db.isEmpty {
                guard let n = Int(db), n >= 0 else { throw ConfigError("--redis-url \(Self.redacted(raw)): database '\(db)' is not a number") }
                database = n
            }
        }
        do {
            let server = try WorkerURL(parsing: "http://" + rest + (rest.contains(":") && !rest.hasSuffix("]") ? "" : ":6379"))
            host = server.host
            port = server.port
        } catch {
            throw ConfigError("--redis-url \(Self.redacted(raw)): \(error.message.replacingOccurrences(of: "worker URL", with: "address"))")
        }
    }

    /// The URL without its password, for logs and errors.
    static func redacted(_ raw: String) -> String {
        guard let at = raw.lastIndex(of: "@"), let scheme = raw.range(of: "://") else { return raw }
        return String(raw[..<scheme.upperBound]) + "…@" + raw[raw.index(after: at)...]
    }

    public var description: String { "redis://\(host):\(port)/\(database)" }
}
