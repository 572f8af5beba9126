import Foundation
import Mesh

/// The mesh's settings, validated: name, addresses, peers and the cluster key.
public struct MeshSettings: Sendable {
    public var name: String
    public var host: String
    public var port: Int
    public var advertise: String
    public var peers: [String]
    /// nil: keyless mode (unsealed; warned about at start).
    public var keyring: MeshKeyring?
    /// Said once at start: a key file others can read (a key anyone on the host can read lets
    /// them join or forge the mesh). Not refused: Kubernetes mounts secrets 0644 by default.
    public var keyFileWarning: String?
    /// Said once at start: this node advertises a loopback address to peers elsewhere, so they
    /// would answer to themselves and no mesh would form.
    public var advertiseWarning: String?

    init(_ f: ResolvedFlags) throws(ConfigError) {
        host = f.stringWithDefault("mesh-host")
        port = try RouterConfig.port(f, "mesh-port")
        guard port != 0 else { throw ConfigError("--mesh-port 0: peers must know the port; give a fixed one") }

        name = f.string("mesh-server-name") ?? (ProcessInfo.processInfo.hostName + "-\(port)")
        peers = try f.list("mesh-peer-urls").map { p throws(ConfigError) -> String in
            var s = p
            for scheme in ["http://", "https://", "udp://"] where s.hasPrefix(scheme) { s = String(s.dropFirst(scheme.count)) }
            guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (1...65535).contains(port), colon > s.startIndex else {
                throw ConfigError("--mesh-peer-urls \(p): expected host:port")
            }
            return s
        }
        // A wildcard bind without --mesh-advertise-host advertises the address peers can reach:
        // the one that routes to the first peer (on one host that is loopback, as before).
        let wildcard = host == "0.0.0.0" || host == "::"
        let advertiseHost = f.string("mesh-advertise-host") ?? (wildcard ? AdvertiseAddress.choose(peers: peers) : host)
        advertise = (advertiseHost.contains(":") ? "[\(advertiseHost)]" : advertiseHost) + ":\(port)"
        let remote = peers.filter { !AdvertiseAddress.isLoopback(AdvertiseAddress.split($0)?.0 ?? $0) }
        if AdvertiseAddress.isLoopback(advertiseHost), !remote.isEmpty {
            advertiseWarning = "this router advertises \(advertise) to peers on other hosts (\(remote.joined(separator: " "))): they cannot reach it there and no mesh will form; set --mesh-host or --mesh-advertise-host to an address they can reach"
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
            // Keyless: the reference gateway's own example has no key, so it starts, unsealed.
            keyring = nil
            return
        }
        do { keyring = try MeshKeyring(parsing: keyText) } catch { throw ConfigError("cluster key (--mesh-key-file / SMG_MESH_KEY): \(error)") }
    }
}
