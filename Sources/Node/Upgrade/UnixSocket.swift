#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A connected or listening Unix stream socket, with blocking calls bounded by timeouts, and the
/// one thing NIO has no public API for: sending open file descriptors to another process
/// (`SCM_RIGHTS`). Used once per in-place upgrade, off the event loops.
///
/// Every message is one `sendmsg`: a 4-byte big-endian length, the bytes, and (first message
/// only, in practice) the descriptors as ancillary data. A peer that sends more than `maxBytes`
/// or more than `maxDescriptors` is cut off; descriptors that came with a refused message are
/// closed, never leaked.
final class UnixSocket {
    enum Failure: Error, CustomStringConvertible {
        case system(String, Int32)
        case pathTooLong(String)
        case closed
        case tooLarge(Int)
        case tooManyDescriptors(Int)
        case notASocket(String)

        var description: String {
            switch self {
            case .system(let call, let code): return "\(call): \(String(cString: strerror(code)))"
            case .pathTooLong(let path): return "socket path longer than 107 bytes: \(path)"
            case .closed: return "the other side closed the connection"
            case .tooLarge(let n): return "message of \(n) bytes is over the limit"
            case .tooManyDescriptors(let n): return "\(n) file descriptors is over the limit"
            case .notASocket(let path): return "\(path) exists and is not a socket (not replaced)"
            }
        }

        var isConnectionRefusedOrMissing: Bool {
            if case .system(_, let code) = self { return code == ECONNREFUSED || code == ENOENT }
            return false
        }
    }

    static let maxBytes = 1 << 20
    static let maxDescriptors = 16

    private(set) var fd: Int32

    private init(fd: Int32) { self.fd = fd }

    deinit { close() }

    func close() {
        if fd >= 0 { _ = Glibc.close(fd) }
        fd = -1
    }

    private static func address(_ path: String) throws(Failure) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw .pathTooLong(path) }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return addr
    }

    private static func socketFD() throws(Failure) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system("socket", errno) }
        return fd
    }

    /// Connects to `path`; `timeout` bounds every later send and receive.
    static func connect(to path: String, timeout: Duration) throws(Failure) -> UnixSocket {
        var addr = try address(path)
        let s = UnixSocket(fd: try socketFD())
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(s.fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw .system("connect", errno) }
        try s.setTimeout(timeout)
        return s
    }

    /// Listens on `path` (replacing a socket file that is there, never any other kind of file),
    /// readable and writable by this user only.
    static func listen(at path: String) throws(Failure) -> UnixSocket {
        var addr = try address(path)
        var st = stat()
        if lstat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFSOCK else { throw .notASocket(path) }
            unlink(path)
        }
        let s = UnixSocket(fd: try socketFD())
        // The socket file is created with the umask's mode: none but the owner may connect.
        let old = umask(0o177)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s.fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        umask(old)
        guard rc == 0 else { throw .system("bind", errno) }
        guard Glibc.listen(s.fd, 4) == 0 else { throw .system("listen", errno) }
        return s
    }

    /// Waits up to `timeoutMs` (-1: without end) for a connection, or until `wake` (a pipe's
    /// read end) is readable; nil when no connection came.
    func accept(timeoutMs: Int32, wake: Int32 = -1) throws(Failure) -> UnixSocket? {
        var p = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
        let ready = poll(&p, wake >= 0 ? 2 : 1, timeoutMs)
        guard ready > 0, p[0].revents != 0 else {
            if ready < 0, errno != EINTR { throw .system("poll", errno) }
            return nil
        }
        let c = Glibc.accept(fd, nil, nil)
        guard c >= 0 else {
            if errno == EAGAIN || errno == EINTR || errno == ECONNABORTED { return nil }
            throw .system("accept", errno)
        }
        _ = fcntl(c, F_SETFD, FD_CLOEXEC)
        return UnixSocket(fd: c)
    }

    func setTimeout(_ timeout: Duration) throws(Failure) {
        let ms = max(1, timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        var tv = timeval(tv_sec: Int(ms / 1000), tv_usec: Int((ms % 1000) * 1000))
        for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
            guard setsockopt(fd, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size)) == 0 else { throw .system("setsockopt", errno) }
        }
    }

    /// The user id of the process at the other end (the kernel's word, not the peer's).
    func peerUserID() throws(Failure) -> uid_t {
        // Linux's `struct ucred` (Glibc exports it only under _GNU_SOURCE).
        struct Credentials { var pid: Int32 = 0; var uid: UInt32 = 0; var gid: UInt32 = 0 }
        var cred = Credentials()
        var len = socklen_t(MemoryLayout<Credentials>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 else { throw .system("getsockopt(SO_PEERCRED)", errno) }
        return cred.uid
    }

    /// Sends `bytes` (length-prefixed) and `descriptors` in one message. The descriptors stay
    /// open here: the receiver gets its own copies.
    func send(_ bytes: [UInt8], descriptors: [Int32] = []) throws(Failure) {
        guard bytes.count <= Self.maxBytes else { throw .tooLarge(bytes.count) }
        guard descriptors.count <= Self.maxDescriptors else { throw .tooManyDescriptors(descriptors.count) }
        let n = UInt32(bytes.count)
        var frame = [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + bytes
        var control = [UInt8](repeating: 0, count: descriptors.isEmpty ? 0 : Self.controlSpace(descriptors.count))
        if !descriptors.isEmpty {
            control.withUnsafeMutableBytes { raw in
                var header = cmsghdr()
                header.cmsg_len = Self.controlLength(descriptors.count)
                header.cmsg_level = SOL_SOCKET
                header.cmsg_type = Int32(SCM_RIGHTS)
                raw.storeBytes(of: header, as: cmsghdr.self)
                for (i, d) in descriptors.enumerated() {
                    raw.storeBytes(of: d, toByteOffset: Self.controlHeader + i * 4, as: Int32.self)
                }
            }
        }
        var sent = 0
        while sent < frame.count {
            let rc = frame.withUnsafeMutableBytes { data in
                control.withUnsafeMutableBytes { ctrl in
                    var iov = iovec(iov_base: data.baseAddress! + sent, iov_len: data.count - sent)
                    return withUnsafeMutablePointer(to: &iov) { iovp -> Int in
                        var msg = msghdr()
                        msg.msg_iov = iovp
                        msg.msg_iovlen = 1
                        // The descriptors go with the first byte only.
                        if sent == 0, ctrl.count > 0 {
                            msg.msg_control = ctrl.baseAddress
                            msg.msg_controllen = ctrl.count
                        }
                        return sendmsg(fd, &msg, Int32(MSG_NOSIGNAL))
                    }
                }
            }
            if rc < 0 {
                if errno == EINTR { continue }
                throw .system("sendmsg", errno)
            }
            sent += rc
        }
    }

    /// Receives one message and the descriptors that came with it (each close-on-exec).
    func receive() throws(Failure) -> (bytes: [UInt8], descriptors: [Int32]) {
        var descriptors: [Int32] = []
        var buffer: [UInt8] = []
        var expected: Int?
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var control = [UInt8](repeating: 0, count: Self.controlSpace(Self.maxDescriptors))
        var failure: Failure?
        while failure == nil {
            if let expected, buffer.count >= 4 + expected { break }
            let got: Int
            do { got = try readChunk(into: &chunk, control: &control, descriptors: &descriptors) } catch {
                failure = error
                break
            }
            guard got > 0 else { failure = .closed; break }
            buffer += chunk.prefix(got)
            if expected == nil, buffer.count >= 4 {
                let n = Int(buffer[0]) << 24 | Int(buffer[1]) << 16 | Int(buffer[2]) << 8 | Int(buffer[3])
                guard n <= Self.maxBytes else { failure = .tooLarge(n); break }
                expected = n
            }
            if descriptors.count > Self.maxDescriptors { failure = .tooManyDescriptors(descriptors.count) }
        }
        if let failure {
            for d in descriptors { _ = Glibc.close(d) }
            throw failure
        }
        return (Array(buffer[4..<(4 + expected!)]), descriptors)
    }

    private func readChunk(into chunk: inout [UInt8], control: inout [UInt8], descriptors: inout [Int32]) throws(Failure) -> Int {
        while true {
            var msg = msghdr()
            let rc = chunk.withUnsafeMutableBytes { data in
                control.withUnsafeMutableBytes { ctrl in
                    var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                    return withUnsafeMutablePointer(to: &iov) { iovp -> Int in
                        msg.msg_iov = iovp
                        msg.msg_iovlen = 1
                        msg.msg_control = ctrl.baseAddress
                        msg.msg_controllen = ctrl.count
                        let n = recvmsg(fd, &msg, Int32(MSG_CMSG_CLOEXEC))
                        if n > 0 { descriptors += Self.descriptors(in: UnsafeRawBufferPointer(rebasing: ctrl.prefix(Int(msg.msg_controllen)))) }
                        return n
                    }
                }
            }
            if rc < 0 {
                if errno == EINTR { continue }
                throw .system("recvmsg", errno)
            }
            if msg.msg_flags & Int32(MSG_CTRUNC) != 0 {
                // More descriptors than the buffer holds: the kernel closed the rest; refuse.
                throw .tooManyDescriptors(Self.maxDescriptors + 1)
            }
            return rc
        }
    }

    // cmsg layout (CMSG_LEN, CMSG_SPACE, CMSG_DATA are C macros Swift does not import).
    private static let controlHeader = (MemoryLayout<cmsghdr>.size + 7) & ~7
    private static func controlLength(_ count: Int) -> Int { controlHeader + count * 4 }
    private static func controlSpace(_ count: Int) -> Int { controlHeader + ((count * 4 + 7) & ~7) }

    /// Every `SCM_RIGHTS` descriptor in a control buffer.
    private static func descriptors(in control: UnsafeRawBufferPointer) -> [Int32] {
        var out: [Int32] = []
        var offset = 0
        while offset + controlHeader <= control.count {
            let header = control.loadUnaligned(fromByteOffset: offset, as: cmsghdr.self)
            let length = Int(header.cmsg_len)
            guard length >= controlHeader, offset + length <= control.count else { break }
            if header.cmsg_level == SOL_SOCKET, header.cmsg_type == Int32(SCM_RIGHTS) {
                for i in 0..<((length - controlHeader) / 4) {
                    out.append(control.loadUnaligned(fromByteOffset: offset + controlHeader + i * 4, as: Int32.self))
                }
            }
            offset += (length + 7) & ~7
        }
        return out
    }
}
