import Logging
import ServiceLifecycle

/// SIGHUP: the TLS certificates and keys are read again from their files (new connections use
/// them, open ones keep theirs; a file that does not load leaves the old context in use). A
/// service of the router's group, so no reload runs once graceful shutdown has begun.
struct CertificateReload: Service, CustomStringConvertible {
    let requests: AsyncStream<Void>
    let tls: TLSContexts
    let logger: Logger
    var description: String { "certificate reload" }

    func run() async {
        for await _ in requests.cancelOnGracefulShutdown() {
            logger.info("signal received", metadata: ["signal": "SIGHUP"])
            tls.reload(logger: logger)
        }
    }
}
