#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A loopback port nothing listens on right now, for TCP and UDP alike (the mesh uses both).
///
/// Below Linux's ephemeral range (32768–60999): a port handed out here is never the one the
/// kernel picks for a `--port 0` bind of another process started meanwhile (that race once made
/// a mesh port collide with an API port). The shell scripts pick theirs the same way
/// (`cluster/free-port.sh`). Nothing holds a port between this check and the caller's bind, so
/// a port is handed out once per test process: two calls in a row (two routers' mesh ports) can
/// never return the same one, which a free-but-not-yet-bound port otherwise could.
public func freeLoopbackPort() throws -> Int {
    for _ in 0..<200 {
        let port = Int.random(in: 20_000..<32_000)
        guard canBind(port, SOCK_STREAM) && canBind(port, SOCK_DGRAM) else { continue }
        if handedOut.withLock({ $0.insert(port).inserted }) { return port }
    }
    throw TestFailure("cannot find a free port")
}

/// Ports `freeLoopbackPort` returned in this process.
private let handedOut = Mutex<Set<Int>>([])

private func canBind(_ port: Int, _ type: __socket_type) -> Bool {
    onLoopback(port, type) { bind($0, $1, $2) }
}

/// Whether something accepts TCP connections on the loopback port.
public func acceptsConnections(_ port: Int) -> Bool {
    onLoopback(port, SOCK_STREAM) { connect($0, $1, $2) }
}

/// `call` (bind or connect) on a fresh socket of `type` with 127.0.0.1:`port`; whether it succeeded.
private func onLoopback(_ port: Int, _ type: __socket_type, _ call: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Bool {
    let fd = socket(AF_INET, Int32(type.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}
