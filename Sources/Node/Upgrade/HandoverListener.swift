import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// The predecessor's half of an in-place upgrade: listens on `--takeover-socket` (mode 0600,
/// and only a process of the same user, or root, is answered) for the successor, sends it the
/// offer (`HandoverOffer`: sockets, mesh name, workers), and waits for it to serve. Then this
/// service returns, which shuts the router's service group down gracefully, after `handOver`
/// has stopped accepting and given up the mesh port: the group's drain is the one SIGTERM
/// starts, so requests and streams in flight finish within `--shutdown-grace-period-secs`.
///
/// One successor at a time; one that goes away before it serves changes nothing here.
/// Blocking socket calls run on a thread of their own, never on the event loops or the
/// concurrency pool.
final class HandoverListener: Service, @unchecked Sendable, CustomStringConvertible {
    typealias Offer = @Sendable () -> (offer: HandoverOffer, descriptors: [Int32])
    typealias HandOver = @Sendable (HandoverAcceptance) async -> Void

    let path: String
    private let socket: UnixSocket
    private let identity: (device: UInt64, inode: UInt64)?
    private let offer: Offer
    private let handOver: HandOver
    private let logger: Logger
    /// How long a successor may take from the offer to serving (its whole start-up).
    private let startupTimeout: Duration
    var description: String { "takeover socket" }

    private init(path: String, socket: UnixSocket, offer: @escaping Offer, handOver: @escaping HandOver, logger: Logger, startupTimeout: Duration) {
        self.path = path
        self.socket = socket
        var st = stat()
        identity = stat(path, &st) == 0 ? (UInt64(st.st_dev), UInt64(st.st_ino)) : nil
        self.offer = offer
        self.handOver = handOver
        self.logger = logger
        self.startupTimeout = startupTimeout
    }

    /// Listens at `path` (replacing whatever socket file is there).
    static func listen(at path: String, offer: @escaping Offer, handOver: @escaping HandOver, logger: Logger,
                       startupTimeout: Duration = .seconds(120)) throws -> HandoverListener {
        do {
            return HandoverListener(path: path, socket: try UnixSocket.listen(at: path), offer: offer, handOver: handOver, logger: logger, startupTimeout: startupTimeout)
        } catch { throw HandoverError.socket(error) }
    }

    /// Set by graceful shutdown, which then writes to `wake`: the thread blocks in `poll`
    /// without a timeout (one that woke every 200 ms to look at the flag was a sixth of an idle
    /// router's CPU) and the pipe ends the wait.
    private let stopRequested = Atomic<Bool>(false)
    private let wake: (read: Int32, write: Int32) = {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return (-1, -1) }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        return (fds[0], fds[1])
    }()

    func run() async throws {
        let accepted: HandoverAcceptance? = await withGracefulShutdownHandler {
            await withCheckedContinuation { continuation in
                let thread = Thread { continuation.resume(returning: self.serve()) }
                thread.name = "smg-takeover"
                thread.start()
            }
        } onGracefulShutdown: {
            self.stopRequested.store(true, ordering: .relaxed)
            var byte: UInt8 = 1
            _ = Glibc.write(self.wake.write, &byte, 1)
        }
        socket.close()
        for fd in [wake.read, wake.write] where fd >= 0 { Glibc.close(fd) }
        guard let accepted else {
            removeFileIfOurs()
            return
        }
        logger.info("in-place upgrade: the successor serves; draining and exiting", metadata: [
            "successor_pid": "\(accepted.pid)", "took": "\(accepted.took.map(\.rawValue).joined(separator: ","))"])
        await handOver(accepted)
        // Returning shuts the group down gracefully: the drain.
    }

    /// Accepts successors until one serves (its acceptance) or `stop` is set (nil).
    private func serve() -> HandoverAcceptance? {
        while !stopRequested.load(ordering: .relaxed) {
            let connection: UnixSocket?
            // Without a pipe (none could be made), look at the flag every 200 ms as a fallback.
            do { connection = try socket.accept(timeoutMs: wake.read >= 0 ? -1 : 200, wake: wake.read) } catch {
                logger.error("takeover socket failed; in-place upgrades are off until restart", metadata: ["path": "\(path)", "error": "\(error)"])
                return waitForStop()
            }
            guard let connection else { continue }
            if let accepted = offer(over: connection) { return accepted }
        }
        return nil
    }

    private func waitForStop() -> HandoverAcceptance? {
        while !stopRequested.load(ordering: .relaxed) {
            var p = pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, wake.read >= 0 ? -1 : 200)
        }
        return nil
    }

    /// One successor: checked, offered, awaited.
    private func offer(over connection: UnixSocket) -> HandoverAcceptance? {
        defer { connection.close() }
        do {
            let uid = try connection.peerUserID()
            guard uid == geteuid() || uid == 0 else {
                logger.warning("takeover refused: the process on the takeover socket runs as another user", metadata: ["uid": "\(uid)", "path": "\(path)"])
                return nil
            }
            try connection.setTimeout(.seconds(5))
            let (offer, descriptors) = self.offer()
            try connection.send(offer.encoded(), descriptors: descriptors)
            logger.info("in-place upgrade: sockets offered to a successor; serving until it is ready", metadata: [
                "sockets": "\(offer.sockets.map(\.rawValue).joined(separator: ","))", "workers": "\(offer.workers.count)"])
            try connection.setTimeout(startupTimeout)
            let (bytes, extra) = try connection.receive()
            for d in extra { close(d) }
            return try HandoverAcceptance.decode(bytes)
        } catch {
            logger.warning("in-place upgrade abandoned: the successor went away before it served; still serving", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// On shutdown without a successor, the socket file goes, unless another process has bound
    /// the path since (then it is that process's).
    private func removeFileIfOurs() {
        var st = stat()
        guard let identity, stat(path, &st) == 0, UInt64(st.st_dev) == identity.device, UInt64(st.st_ino) == identity.inode else { return }
        unlink(path)
    }
}
