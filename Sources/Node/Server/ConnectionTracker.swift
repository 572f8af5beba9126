import NIOCore
import Synchronization

/// Open client connections, so shutdown can close idle keep-alive ones after the drain.
final class ConnectionTracker: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        channels.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in self?.channels.withLock { _ = $0.removeValue(forKey: id) } }
    }

    func closeAll() {
        for c in channels.withLock({ Array($0.values) }) { c.close(promise: nil) }
    }
}
