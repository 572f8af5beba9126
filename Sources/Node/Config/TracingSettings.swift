/// `--enable-trace`, `--otlp-traces-endpoint` and `--otlp-traces-sample-ratio`: where spans go
/// and how many new traces are recorded. Validated with the rest of `RouterConfig`.
public struct TracingSettings: Sendable, Equatable {
    /// The collector, host:port as the reference gateway takes it (OTLP over gRPC, plain HTTP/2).
    public var host: String
    public var port: Int
    /// The share of traces this router starts that are recorded; a trace a client started keeps
    /// the client's decision (parent-based sampling).
    public var sampleRatio: Double

    init(_ f: ResolvedFlags) throws(ConfigError) {
        let endpoint = f.stringWithDefault("otlp-traces-endpoint")
        // host:port, as the reference documents it; a URL's scheme is tolerated (http only: the
        // exporter speaks plain gRPC).
        var rest = Substring(endpoint)
        if rest.hasPrefix("http://") { rest = rest.dropFirst(7) }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else {
            throw ConfigError("--otlp-traces-endpoint \(endpoint): expected host:port (for example localhost:4317)")
        }
        var host = String(rest[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, host.count <= 253, !host.contains("/"), !host.contains("@") else {
            throw ConfigError("--otlp-traces-endpoint \(endpoint): expected host:port (for example localhost:4317)")
        }
        self.host = host
        self.port = port
        let ratio = f.doubleWithDefault("otlp-traces-sample-ratio")
        guard (0...1).contains(ratio) else { throw ConfigError("--otlp-traces-sample-ratio \(ratio): must be between 0.0 and 1.0") }
        self.sampleRatio = ratio
    }

    /// The collector as the exporter takes it.
    public var endpointURL: String { host.contains(":") ? "http://[\(host)]:\(port)" : "http://\(host):\(port)" }
}
