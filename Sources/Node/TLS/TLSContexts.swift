import Logging
import NIOSSL
import Synchronization

/// The router's TLS contexts, built by swift-nio-ssl (BoringSSL) from the configured files:
/// the server's for the API port, the client's for `https://` workers and `rediss://` Redis. `reload()` (SIGHUP)
/// builds both again from the files: new connections get the new ones, open connections keep
/// theirs; a file that does not load is refused with a log line and the old context stays.
public final class TLSContexts: Sendable {
    let settings: TLSSettings
    private let server: Mutex<NIOSSLContext?>
    private let client: Mutex<NIOSSLContext>
    private let redisClient: Mutex<NIOSSLContext>
    private let http2Client: Mutex<NIOSSLContext>

    public init(_ settings: TLSSettings) throws(ConfigError) {
        self.settings = settings
        server = Mutex(try settings.server.map { identity throws(ConfigError) in try Self.serverContext(identity) })
        client = Mutex(try Self.clientContext(settings))
        redisClient = Mutex(try Self.clientContext(settings, alpn: []))
        http2Client = Mutex(try Self.clientContext(settings, alpn: ["h2", "http/1.1"]))
    }

    /// The API port's context (nil: plain HTTP).
    var serverContext: NIOSSLContext? { server.withLock { $0 } }
    /// The context for connections to `https://` workers.
    var clientContext: NIOSSLContext { client.withLock { $0 } }
    /// The context for `rediss://` connections: the same trust roots and client certificate,
    /// without ALPN (Redis speaks RESP, not HTTP).
    var redisContext: NIOSSLContext { redisClient.withLock { $0 } }
    /// The context for `--upstream-http2` connections to `https://` workers: ALPN offers `h2`
    /// first; a worker that does not choose it stays on HTTP/1.1.
    var http2ClientContext: NIOSSLContext { http2Client.withLock { $0 } }

    /// Loads every file again; what fails to load keeps its old context. Returns what happened,
    /// one line per context, for the log.
    @discardableResult
    public func reload(logger: Logger) -> Bool {
        var ok = true
        if let identity = settings.server {
            do throws(ConfigError) {
                let fresh = try Self.serverContext(identity)
                server.withLock { $0 = fresh }
                logger.info("TLS: server certificate reloaded", metadata: ["certificate": "\(identity.certificatePath)"])
            } catch {
                ok = false
                logger.error("TLS: server certificate NOT reloaded; the previous one stays in use", metadata: ["error": "\(error.message)"])
            }
        }
        do throws(ConfigError) {
            let fresh = try Self.clientContext(settings)
            let freshRedis = try Self.clientContext(settings, alpn: [])
            let freshHTTP2 = try Self.clientContext(settings, alpn: ["h2", "http/1.1"])
            client.withLock { $0 = fresh }
            redisClient.withLock { $0 = freshRedis }
            http2Client.withLock { $0 = freshHTTP2 }
            if settings.client != nil || !settings.caCertificatePaths.isEmpty { logger.info("TLS: trust roots and client certificate (workers, Redis) reloaded") }
        } catch {
            ok = false
            logger.error("TLS: worker TLS settings NOT reloaded; the previous ones stay in use", metadata: ["error": "\(error.message)"])
        }
        return ok
    }

    /// TLS 1.2 and 1.3 only, ALPN `http/1.1`.
    static func serverContext(_ identity: TLSSettings.Identity) throws(ConfigError) -> NIOSSLContext {
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(identity.certificatePath)
            guard !chain.isEmpty else { throw ConfigError("--tls-cert-path \(identity.certificatePath): no certificate in it") }
            let key = try NIOSSLPrivateKey(file: identity.keyPath, format: .pem)
            var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
            configuration.minimumTLSVersion = .tlsv12
            configuration.applicationProtocols = ["http/1.1"]
            return try NIOSSLContext(configuration: configuration)
        } catch let error as ConfigError {
            throw error
        } catch {
            throw ConfigError("--tls-cert-path \(identity.certificatePath) / --tls-key-path \(identity.keyPath): \(error)")
        }
    }

    /// Full verification (chain and hostname) against `--ca-cert-paths` or the system store;
    /// the client certificate for mutual TLS when given.
    static func clientContext(_ settings: TLSSettings, alpn: [String] = ["http/1.1"]) throws(ConfigError) -> NIOSSLContext {
        let configuration = try clientConfiguration(settings, alpn: alpn)
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw ConfigError("TLS (--ca-cert-paths, --client-cert-path, --client-key-path): \(error)")
        }
    }

    /// The verifying client configuration itself, for a library that builds its own context
    /// (postgres-nio, `sslmode=verify-full`).
    static func clientConfiguration(_ settings: TLSSettings, alpn: [String] = []) throws(ConfigError) -> TLSConfiguration {
        do {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = .tlsv12
            configuration.certificateVerification = .fullVerification
            configuration.applicationProtocols = alpn
            if !settings.caCertificatePaths.isEmpty {
                var roots: [NIOSSLCertificate] = []
                for path in settings.caCertificatePaths {
                    let certificates = try NIOSSLCertificate.fromPEMFile(path)
                    guard !certificates.isEmpty else { throw ConfigError("--ca-cert-paths \(path): no certificate in it") }
                    roots += certificates
                }
                configuration.trustRoots = .certificates(roots)
            }
            if let identity = settings.client {
                let chain = try NIOSSLCertificate.fromPEMFile(identity.certificatePath)
                guard !chain.isEmpty else { throw ConfigError("--client-cert-path \(identity.certificatePath): no certificate in it") }
                configuration.certificateChain = chain.map { .certificate($0) }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: identity.keyPath, format: .pem))
            }
            return configuration
        } catch let error as ConfigError {
            throw error
        } catch {
            throw ConfigError("worker TLS (--ca-cert-paths, --client-cert-path, --client-key-path): \(error)")
        }
    }
}
