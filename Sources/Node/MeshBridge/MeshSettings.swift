import Foundation
import Mesh

/// The mesh's settings, validated: name, addresses, peers and the cluster key.
public struct MeshSettings: Sendable {
    public var name: String
    public var host: String
    public var port: Int
    public var advertise: String
    public var peers: [String]
    public var keyring: MeshKeyring
    /// Said once at start: a key file others can read (a key anyone on the host can read lets
    /// them join or forge the mesh). Not refused: Kubernetes mounts secrets 0644 by default.
    public var keyFileWarning: String?

    init(_ f: ResolvedFlags) throws(ConfigError) {
        host = f.stringWithDefault("mesh-host")
        port = try RouterConfig.port(f, "mesh-port")
        guard port != 0 else { throw ConfigError("--mesh-port 0: peers must know the port; give a fixed one") }
        let advertiseHost = f.string("mesh-advertise-host") ?? (host == "0.0.0.0" || host == "::" ? "127.0.0.1" : host)
        advertise = (advertiseHost.contains(":") ? "[\(advertiseHost)]" : advertiseHost) + ":\(port)"
        name = f.string("mesh-server-name") ?? (ProcessInfo.processInfo.hostName + "-\(port)")
        peers = try f.list("mesh-peer-urls").map { p throws(ConfigError) -> String in
            var s = p
            for scheme in ["http://", "https://", "udp://"] where s.hasPrefix(scheme) { s = String(s.dropFirst(scheme.count)) }
            guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (1...65535).contains(port), colon > s.startIndex else {
                throw ConfigError("--mesh-peer-urls \(p): expected host:port")
            }
            return s
        }
        let keyText: String
        if let inline = f.string("mesh-key"), !inline.isEmpty {
            keyText = inline
        } else if let path = f.string("mesh-key-file") {
            do { keyText = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw ConfigError("--mesh-key-file \(path): cannot read it (\(error.localizedDescription))")
            }
            if let mode = (try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? Int, mode & 0o077 != 0 {
                keyFileWarning = "--mesh-key-file \(path) is readable by \(mode & 0o007 != 0 ? "every user on this host" : "its group") (mode \(String(mode, radix: 8))): anyone who reads it can join and forge the mesh; chmod 600 it"
            }
        } else {
            throw ConfigError("--enable-mesh needs a cluster key: --mesh-key-file FILE or SMG_MESH_KEY (make one with `smg mesh-keygen`)")
        }
        do { keyring = try MeshKeyring(parsing: keyText) } catch { throw ConfigError("cluster key (--mesh-key-file / SMG_MESH_KEY): \(error)") }
    }
}
