import NIOCore
import Synchronization

/// Open client connections: counted against `--max-client-connections` and, per client
/// address, `--max-connections-per-client`; closed by shutdown after the drain.
final class ConnectionTracker: Sendable {
    private struct Open {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var perClient: [String: Int] = [:]
    }
    private let open = Mutex(Open())

    enum Refusal { case total, perClient }

    /// Tracks `channel` unless `limit` connections are open already, or `perClient` from its
    /// address (0: no such cap); says which limit refused it.
    func add(_ channel: any Channel, limit: Int = .max, perClient: Int = 0) -> Refusal? {
        let id = ObjectIdentifier(channel)
        let client = perClient > 0 ? channel.remoteAddress?.ipAddress : nil
        let refusal: Refusal? = open.withLock { o in
            guard o.channels.count < limit else { return .total }
            if let client {
                guard o.perClient[client, default: 0] < perClient else { return .perClient }
                o.perClient[client, default: 0] += 1
            }
            o.channels[id] = channel
            return nil
        }
        guard refusal == nil else { return refusal }
        channel.closeFuture.whenComplete { [weak self] _ in
            self?.open.withLock { o in
                o.channels[id] = nil
                if let client {
                    let left = o.perClient[client, default: 1] - 1
                    o.perClient[client] = left > 0 ? left : nil
                }
            }
        }
        return nil
    }

    /// Connections open now (`smg_http_connections_active`).
    var count: Int { open.withLock { $0.channels.count } }

    func closeAll() {
        for c in open.withLock({ Array($0.channels.values) }) { c.close(promise: nil) }
    }
}
