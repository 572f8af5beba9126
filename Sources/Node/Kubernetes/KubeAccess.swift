import Foundation
import NIOSSL
import Yams

/// Where the Kubernetes API server is and how this router proves who it is, found as
/// Kubernetes clients find it (kube-rs's `Config::infer`, client-go's loading rules):
///
/// 1. a kubeconfig: the first file of `$KUBECONFIG` that exists, else `~/.kube/config` (a
///    router run outside the cluster, or beside `kubectl`);
/// 2. in the cluster: `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` and the pod's service
///    account (`/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}`).
///
/// A token from a file (the service account's, or a kubeconfig's `tokenFile`) is read again for
/// every request: projected tokens rotate (hourly by default) and a watch is re-opened every few
/// minutes, so a rotated token is in use within one watch. TLS is swift-nio-ssl's, verifying the
/// server against the cluster CA (or the kubeconfig's); exec and auth-provider plugins are not
/// run, and say so.
struct KubeAccess: Sendable {
    enum Token: Sendable, Equatable {
        case none
        case fixed(String)
        /// Read at each request.
        case file(String)
    }

    var host: String
    var port: Int
    /// The server URL's path, for API servers behind a prefix (`https://proxy/k8s/clusters/c1`).
    var pathPrefix: String
    /// nil: plain HTTP (a kubeconfig may name an `http://` server; in-cluster is always TLS).
    var tls: TLSConfiguration?
    /// The name the server's certificate must carry (nil: an IP address, checked as such).
    var serverName: String?
    var token: Token
    /// Basic auth from a kubeconfig (`username`/`password`).
    var basic: (user: String, password: String)?
    /// Where this came from, for the start-up log line.
    var origin: String

    static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// The bearer token to send now (nil: none), or an error naming the file that cannot be read.
    func bearer() throws(ConfigError) -> String? {
        switch token {
        case .none: return nil
        case .fixed(let t): return t
        case .file(let path):
            do {
                let text = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                guard !text.isEmpty else { throw ConfigError("Kubernetes token file \(path) is empty") }
                return text
            } catch let error as ConfigError {
                throw error
            } catch {
                throw ConfigError("cannot read the Kubernetes token file \(path): \(error.localizedDescription)")
            }
        }
    }

    /// The value of the `Authorization` header, if any.
    func authorization() throws(ConfigError) -> String? {
        if let t = try bearer() { return "Bearer \(t)" }
        if let b = basic { return "Basic \(Data("\(b.user):\(b.password)".utf8).base64EncodedString())" }
        return nil
    }

    /// Finds the API server as described above. `environment` and `home` are parameters so tests
    /// need not touch the process's.
    static func infer(environment: [String: String] = ProcessInfo.processInfo.environment,
                      home: String = NSHomeDirectory(), serviceAccount: String = serviceAccountDirectory) throws(ConfigError) -> KubeAccess {
        let fm = FileManager.default
        if let list = environment["KUBECONFIG"], !list.isEmpty {
            let paths = list.split(separator: ":").map(String.init)
            guard let path = paths.first(where: { fm.fileExists(atPath: $0) }) else {
                throw ConfigError("KUBECONFIG=\(list.prefix(200)): no such file")
            }
            return try kubeconfig(path: path)
        }
        let home = home + "/.kube/config"
        if fm.fileExists(atPath: home) { return try kubeconfig(path: home) }
        if environment["KUBERNETES_SERVICE_HOST"] != nil { return try inCluster(environment: environment, directory: serviceAccount) }
        throw ConfigError("Kubernetes discovery: no API server found (not in a cluster: KUBERNETES_SERVICE_HOST is not set; no kubeconfig: KUBECONFIG is not set and \(home) does not exist)")
    }

    /// In a pod: the service's address from the environment, the service account's token and CA.
    static func inCluster(environment: [String: String], directory: String) throws(ConfigError) -> KubeAccess {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty else { throw ConfigError("KUBERNETES_SERVICE_HOST is not set") }
        let portText = environment["KUBERNETES_SERVICE_PORT"] ?? "443"
        guard let port = Int(portText), (1...65535).contains(port) else { throw ConfigError("KUBERNETES_SERVICE_PORT=\(portText.prefix(20)): not a port") }
        let tokenPath = directory + "/token"
        guard FileManager.default.fileExists(atPath: tokenPath) else {
            throw ConfigError("in-cluster Kubernetes access needs the service account token at \(tokenPath) (is automountServiceAccountToken off?)")
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        tls.applicationProtocols = ["http/1.1"]
        let caPath = directory + "/ca.crt"
        do {
            let roots = try NIOSSLCertificate.fromPEMFile(caPath)
            guard !roots.isEmpty else { throw ConfigError("\(caPath): no certificate in it") }
            tls.trustRoots = .certificates(roots)
        } catch let error as ConfigError {
            throw error
        } catch {
            throw ConfigError("cannot read the cluster CA \(caPath): \(error)")
        }
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        return KubeAccess(host: bare, port: port, pathPrefix: "", tls: tls, serverName: TLSServerName.of(host: bare), token: .file(tokenPath),
                          basic: nil, origin: "in-cluster service account (\(bare):\(port))")
    }

    /// A kubeconfig's current context: its cluster's server and CA, its user's credentials.
    static func kubeconfig(path: String) throws(ConfigError) -> KubeAccess {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigError("cannot read kubeconfig \(path): \(error.localizedDescription)")
        }
        guard text.utf8.count <= 4 << 20 else { throw ConfigError("kubeconfig \(path) is larger than 4 MiB") }
        let root: [String: Any]
        do {
            guard let doc = try Yams.load(yaml: text) as? [String: Any] else { throw ConfigError("kubeconfig \(path) is not a YAML mapping") }
            root = doc
        } catch let error as ConfigError {
            throw error
        } catch {
            throw ConfigError("kubeconfig \(path) is not valid YAML: \(error)")
        }
        let dir = (path as NSString).deletingLastPathComponent
        func resolve(_ p: String) -> String { p.hasPrefix("/") ? p : dir + "/" + p }
        func named(_ list: String, _ name: String, _ field: String) throws(ConfigError) -> [String: Any] {
            let items = root[list] as? [[String: Any]] ?? []
            guard let item = items.first(where: { $0["name"] as? String == name }) else {
                throw ConfigError("kubeconfig \(path): no \(list.dropLast()) named \(name.prefix(80))")
            }
            return item[field] as? [String: Any] ?? [:]
        }
        let contexts = root["contexts"] as? [[String: Any]] ?? []
        guard let contextName = root["current-context"] as? String ?? (contexts.count == 1 ? contexts[0]["name"] as? String : nil), !contextName.isEmpty else {
            throw ConfigError("kubeconfig \(path): no current-context")
        }
        let context = try named("contexts", contextName, "context")
        guard let clusterName = context["cluster"] as? String else { throw ConfigError("kubeconfig \(path): context \(contextName) names no cluster") }
        let cluster = try named("clusters", clusterName, "cluster")
        let user = try (context["user"] as? String).map { name throws(ConfigError) in try named("users", name, "user") } ?? [:]

        guard let server = cluster["server"] as? String, let url = URLComponents(string: server), let scheme = url.scheme, let host = url.host, !host.isEmpty else {
            throw ConfigError("kubeconfig \(path): cluster \(clusterName) has no server URL")
        }
        guard scheme == "https" || scheme == "http" else { throw ConfigError("kubeconfig \(path): server \(server.prefix(120)): expected https:// or http://") }
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        var access = KubeAccess(host: bare, port: url.port ?? (scheme == "https" ? 443 : 80), pathPrefix: url.path.hasSuffix("/") ? String(url.path.dropLast()) : url.path,
                                tls: nil, serverName: TLSServerName.of(host: bare), token: .none, basic: nil,
                                origin: "kubeconfig \(path), context \(contextName) (\(server.prefix(120)))")
        if let unsupported = ["exec", "auth-provider"].first(where: { user[$0] != nil }) {
            throw ConfigError("kubeconfig \(path): user of context \(contextName) authenticates with '\(unsupported)', which smg does not run; give it a token, tokenFile or client certificate")
        }
        if let token = user["token"] as? String, !token.isEmpty {
            access.token = .fixed(token)
        } else if let file = user["tokenFile"] as? String, !file.isEmpty {
            access.token = .file(resolve(file))
        } else if let name = user["username"] as? String, let password = user["password"] as? String {
            access.basic = (name, password)
        }
        if scheme == "https" {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.minimumTLSVersion = .tlsv12
            tls.applicationProtocols = ["http/1.1"]
            if let name = cluster["tls-server-name"] as? String, !name.isEmpty { access.serverName = name }
            do {
                if cluster["insecure-skip-tls-verify"] as? Bool == true {
                    tls.certificateVerification = .none
                } else if let data = cluster["certificate-authority-data"] as? String {
                    tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(try base64(data, "certificate-authority-data"))))
                } else if let file = cluster["certificate-authority"] as? String {
                    tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(resolve(file)))
                }
                if let data = user["client-certificate-data"] as? String {
                    tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(try base64(data, "client-certificate-data"))).map { .certificate($0) }
                } else if let file = user["client-certificate"] as? String {
                    tls.certificateChain = try NIOSSLCertificate.fromPEMFile(resolve(file)).map { .certificate($0) }
                }
                if let data = user["client-key-data"] as? String {
                    tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(try base64(data, "client-key-data")), format: .pem))
                } else if let file = user["client-key"] as? String {
                    tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: resolve(file), format: .pem))
                }
            } catch let error as ConfigError {
                throw error
            } catch {
                throw ConfigError("kubeconfig \(path): cluster \(clusterName) or its user: a certificate or key that cannot be read (\(error))")
            }
            guard tls.certificateChain.isEmpty == (tls.privateKey == nil) else {
                throw ConfigError("kubeconfig \(path): a client certificate needs its key, and a key its certificate")
            }
            access.tls = tls
        }
        return access
    }

    private static func base64(_ text: String, _ field: String) throws(ConfigError) -> Data {
        guard let data = Data(base64Encoded: text.filter { !$0.isWhitespace }) else { throw ConfigError("kubeconfig \(field) is not base64") }
        return data
    }

    /// Whether certificate checks are off (`insecure-skip-tls-verify`), warned about at start.
    var insecure: Bool { tls?.certificateVerification == CertificateVerification.none }
}
