import NIOCore
import Synchronization

/// Open client connections: counted against `--max-client-connections`, and closed by shutdown
/// after the drain.
final class ConnectionTracker: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    /// Tracks `channel` unless `limit` connections are open already (then false).
    func add(_ channel: any Channel, limit: Int = .max) -> Bool {
        let id = ObjectIdentifier(channel)
        guard channels.withLock({ c in
            guard c.count < limit else { return false }
            c[id] = channel
            return true
        }) else { return false }
        channel.closeFuture.whenComplete { [weak self] _ in self?.channels.withLock { _ = $0.removeValue(forKey: id) } }
        return true
    }

    func closeAll() {
        for c in channels.withLock({ Array($0.values) }) { c.close(promise: nil) }
    }
}
