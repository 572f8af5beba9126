/// `--redis-url`, in the two forms Redis clients know:
///
/// - `redis://[user:password@]host[:port][/db]`: one server;
/// - `redis-sentinel://[[user:]password@]host1[:26379][,host2[:port]…][/db][?sentinel_password=…]#master`:
///   the master that the Sentinels at these addresses agree on for the name after `#` (the form
///   Lettuce and Spring use). The user and password are the master's (and its replicas');
///   `sentinel_password` is the Sentinels' own (`requirepass` in sentinel.conf), when they have one.
///
/// `rediss://` and `rediss-sentinel://` are the same over TLS (every connection: to the server,
/// the Sentinels and the master they name), verified as connections to workers are.
public struct RedisURL: Sendable, Equatable {
    public struct Address: Sendable, Equatable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
        /// The name to send as SNI and to verify the certificate against (nil for an address).
        var tlsServerName: String? { TLSServerName.of(host: host) }
    }

    /// Where the data lives: named outright, or asked of Sentinels.
    public enum Server: Sendable, Equatable {
        case direct(Address)
        case sentinel(master: String, sentinels: [Address], password: String?)
    }

    public var server: Server
    /// `rediss://`, `rediss-sentinel://`: every connection over TLS.
    public var tls: Bool
    public var user: String?
    public var password: String?
    public var database: Int

    /// Bounds on what a URL may name: a handful of Sentinels is the deployment (three or five).
    static let maxSentinels = 16
    static let maxMasterName = 256

    public init(parsing raw: String) throws(ConfigError) {
        let schemes: [(String, sentinel: Bool, tls: Bool)] = [("redis://", false, false), ("rediss://", false, true),
                                                              ("redis-sentinel://", true, false), ("rediss-sentinel://", true, true)]
        guard let scheme = schemes.first(where: { raw.hasPrefix($0.0) }) else {
            throw Self.problem(raw, "expected redis[s]://[user:password@]host[:port][/db] or redis[s]-sentinel://[password@]host[:port][,host[:port]…][/db]#master")
        }
        let sentinel = scheme.sentinel
        tls = scheme.tls
        var rest = raw.dropFirst(scheme.0.count)
        var master: Substring?
        if let hash = rest.firstIndex(of: "#") {
            master = rest[rest.index(after: hash)...]
            rest = rest[..<hash]
        }
        var sentinelPassword: String?
        if let question = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: question)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard sentinel, parts.count == 2, parts[0] == "sentinel_password" else {
                    throw Self.problem(raw, "unknown option '\(pair.prefix(40))' (only sentinel_password, with redis-sentinel://)")
                }
                sentinelPassword = RequestTarget.percentDecode(parts[1])
            }
            rest = rest[..<question]
        }
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
                guard let n = Int(db), n >= 0 else { throw Self.problem(raw, "database '\(db.prefix(40))' is not a number") }
                database = n
            }
        }
        guard sentinel else {
            guard master == nil else { throw Self.problem(raw, "a master name (#…) is for redis-sentinel:// URLs") }
            server = .direct(try Self.address(rest, defaultPort: 6379, raw))
            return
        }
        guard let master, !master.isEmpty else { throw Self.problem(raw, "name the master after #, as the Sentinels know it (sentinel monitor NAME …)") }
        guard master.utf8.count <= Self.maxMasterName, master.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw Self.problem(raw, "the master name must be 1 to \(Self.maxMasterName) letters, digits, '-', '_' or '.'")
        }
        let hosts = rest.split(separator: ",", omittingEmptySubsequences: false)
        guard hosts.count <= Self.maxSentinels else { throw Self.problem(raw, "more than \(Self.maxSentinels) Sentinels") }
        var sentinels: [Address] = []
        for host in hosts {
            let a = try Self.address(host, defaultPort: 26379, raw)
            if !sentinels.contains(a) { sentinels.append(a) }
        }
        server = .sentinel(master: String(master), sentinels: sentinels, password: sentinelPassword)
    }

    private static func address(_ text: Substring, defaultPort: Int, _ raw: String) throws(ConfigError) -> Address {
        guard !text.isEmpty else { throw problem(raw, "an address is empty") }
        do {
            let server = try WorkerURL(parsing: "http://" + text + (text.contains(":") && !text.hasSuffix("]") ? "" : ":\(defaultPort)"))
            return Address(host: server.host, port: server.port)
        } catch {
            throw problem(raw, error.message.replacingOccurrences(of: "worker URL", with: "address"))
        }
    }

    private static func problem(_ raw: String, _ why: String) -> ConfigError { ConfigError("--redis-url \(redacted(raw)): \(why)") }

    /// The URL without its passwords, for logs and errors.
    static func redacted(_ raw: String) -> String {
        var text = raw
        if let at = text.lastIndex(of: "@"), let scheme = text.range(of: "://"), scheme.upperBound <= at {
            text = String(text[..<scheme.upperBound]) + "…@" + text[text.index(after: at)...]
        }
        if let option = text.range(of: "sentinel_password=") {
            let end = text[option.upperBound...].firstIndex { $0 == "&" || $0 == "#" } ?? text.endIndex
            text.replaceSubrange(option.upperBound..<end, with: "…")
        }
        return text
    }

    public var description: String {
        let s = tls ? "s" : ""
        switch server {
        case .direct(let a): return "redis\(s)://\(a)/\(database)"
        case .sentinel(let master, let sentinels, _): return "redis\(s)-sentinel://\(sentinels.map(\.description).joined(separator: ","))/\(database)#\(master)"
        }
    }
}
