import Foundation

/// The TLS flags, validated: HTTPS on the API port (`--tls-cert-path`, `--tls-key-path`) and TLS to
/// `https://` workers (`--ca-cert-paths`, `--client-cert-path`, `--client-key-path`). Files are
/// read when the contexts are built (at start and on SIGHUP), so a missing one fails start-up with
/// its flag named.
public struct TLSSettings: Sendable {
    public struct Identity: Sendable, Equatable {
        /// PEM: the certificate first, then its chain.
        public var certificatePath: String
        /// PEM: RSA or ECDSA.
        public var keyPath: String
    }

    /// HTTPS on the API port, when set.
    public var server: Identity?
    /// Trust roots for workers; the system store when empty.
    public var caCertificatePaths: [String]
    /// Mutual TLS to workers, when set.
    public var client: Identity?

    init(_ f: ResolvedFlags) throws(ConfigError) {
        server = try Self.pair(f, cert: "tls-cert-path", key: "tls-key-path")
        client = try Self.pair(f, cert: "client-cert-path", key: "client-key-path")
        caCertificatePaths = f.list("ca-cert-paths")
        for path in caCertificatePaths where !FileManager.default.isReadableFile(atPath: path) {
            throw ConfigError("--ca-cert-paths: cannot read \(path)")
        }
    }

    private static func pair(_ f: ResolvedFlags, cert: String, key: String) throws(ConfigError) -> Identity? {
        let c = f.string(cert).flatMap { $0.isEmpty ? nil : $0 }
        let k = f.string(key).flatMap { $0.isEmpty ? nil : $0 }
        switch (c, k) {
        case (nil, nil): return nil
        case (.some, nil): throw ConfigError("--\(cert) needs --\(key) (the private key of that certificate)")
        case (nil, .some): throw ConfigError("--\(key) needs --\(cert) (the certificate of that key)")
        case (.some(let c), .some(let k)):
            for (flag, path) in [(cert, c), (key, k)] where !FileManager.default.isReadableFile(atPath: path) {
                throw ConfigError("--\(flag): cannot read \(path)")
            }
            return Identity(certificatePath: c, keyPath: k)
        }
    }
}
