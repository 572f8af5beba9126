import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// systemd's readiness protocol (`Type=notify`): one datagram to `$NOTIFY_SOCKET`. A router
/// sends `READY=1` with its pid once it serves; the successor of an in-place upgrade sends the
/// same, and `MAINPID=` makes it the service's main process (smg.service has
/// `NotifyAccess=all`), so systemd follows the upgrade instead of taking the predecessor's exit
/// for the service's end. Without `$NOTIFY_SOCKET` (not under systemd) it does nothing.
public enum SystemdNotify {
    @discardableResult
    public static func ready(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        send("READY=1\nMAINPID=\(getpid())", to: environment["NOTIFY_SOCKET"])
    }

    static func send(_ message: String, to socketPath: String?) -> Bool {
        guard let socketPath, !socketPath.isEmpty else { return false }
        var bytes = Array(socketPath.utf8)
        // "@name": the abstract namespace (a leading NUL in the address).
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        let payload = Array(message.utf8)
        let sent = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, payload, payload.count, Int32(MSG_NOSIGNAL), $0, length) }
        }
        return sent == payload.count
    }
}
