import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Sockets made here rather than by NIO's `bind(host:port:)`, then handed to NIO with
/// `withBoundSocket`: a router must know the descriptors it listens on to pass them to the
/// process that takes over from it in an in-place upgrade, and the successor starts from the
/// descriptors it received instead of binding. Used by the mesh's sockets and the router's.
public enum BoundSocket {
    public enum Kind: Sendable, Equatable { case stream, datagram }

    /// A close-on-exec socket bound to `host:port` with `SO_REUSEADDR` (and listening, with
    /// `backlog`, when a stream socket). Errors read as NIO's bind errors do.
    public static func make(_ kind: Kind, host: String, port: Int, backlog: Int32 = 1024) throws -> Int32 {
        let address = try SocketAddress.makeAddressResolvingHost(host, port: port)
        let family: Int32
        switch address {
        case .v4: family = AF_INET
        case .v6: family = AF_INET6
        case .unixDomainSocket: throw IOError(errnoCode: EAFNOSUPPORT, reason: "a Unix socket path is not a host")
        }
        let type = (kind == .stream ? Int32(SOCK_STREAM.rawValue) : Int32(SOCK_DGRAM.rawValue)) | Int32(SOCK_CLOEXEC.rawValue)
        let fd = socket(family, type, 0)
        guard fd >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        do {
            var one: Int32 = 1
            guard setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
                throw IOError(errnoCode: errno, reason: "setsockopt(SO_REUSEADDR)")
            }
            let rc: Int32
            switch address {
            case .v4(let a):
                var sa = a.address
                rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            case .v6(let a):
                var sa = a.address
                rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
            case .unixDomainSocket: rc = -1
            }
            guard rc == 0 else { throw IOError(errnoCode: errno, reason: "bind(\(host):\(port))") }
            if kind == .stream, listen(fd, backlog) != 0 { throw IOError(errnoCode: errno, reason: "listen") }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// What a descriptor is: its kind and the port it is bound to; nil when it is not a bound
    /// IPv4/IPv6 socket of either kind (a descriptor another process sent is checked with this).
    public static func describe(_ fd: Int32) -> (kind: Kind, host: String, port: Int)? {
        var type: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 else { return nil }
        let kind: Kind
        switch type {
        case Int32(SOCK_STREAM.rawValue): kind = .stream
        case Int32(SOCK_DGRAM.rawValue): kind = .datagram
        default: return nil
        }
        var storage = sockaddr_storage()
        var size = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &size) } }
        guard rc == 0 else { return nil }
        let address: SocketAddress
        switch Int32(storage.ss_family) {
        case AF_INET:
            address = withUnsafeBytes(of: storage) { SocketAddress($0.loadUnaligned(as: sockaddr_in.self), host: "") }
        case AF_INET6:
            address = withUnsafeBytes(of: storage) { SocketAddress($0.loadUnaligned(as: sockaddr_in6.self), host: "") }
        default: return nil
        }
        guard let port = address.port, port > 0 else { return nil }
        return (kind, address.ipAddress ?? "", port)
    }
}
