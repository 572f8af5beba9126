import Logging
import MeshCore

/// What the mesh says at `--log-level mesh=debug`: one line per replication message in or out
/// (writes pushed, digests, repairs answered, full states) and per membership exchange (joins,
/// push-pull syncs). Probes (ping, ack, ping-req) are too frequent to be worth a line: their
/// outcome is the member changes logged at info.
enum MeshDebugLog {
    /// The line for `message`, or nil for one not worth a line.
    static func line(_ message: MeshNode.Message) -> (event: String, metadata: Logger.Metadata)? {
        switch message {
        case .push(let entries):
            return ("writes", ["entries": "\(entries.count)"])
        case .digest(let digest, let reply):
            let origins: String
            switch digest.vector {
            case .whole(let v): origins = "\(v.counters.count)"
            case .summary: origins = "summary"
            }
            return ("digest", ["origins": "\(origins)", "live": "\(digest.liveCount)", "reply": "\(reply)"])
        case .answer(let entries, _, let retired):
            return ("repair", ["entries": "\(entries.count)", "retired_origins": "\(retired.counters.count)"])
        case .state(let entries, _, let reply):
            return ("full state", ["entries": "\(entries.count)", "reply": "\(reply)"])
        case .swim(let m):
            switch m {
            case .join(let member): return ("join", ["member": "\(member.name)"])
            case .sync(let members, let reply): return ("membership sync", ["members": "\(members.count)", "reply": "\(reply)"])
            case .syncBuckets(_, let members, let reply): return ("membership repair", ["members": "\(members.count)", "reply": "\(reply)"])
            default: return nil
            }
        }
    }

    static func received(_ message: MeshNode.Message, from peer: String, logger: Logger) {
        guard logger.logLevel <= .debug, let (event, metadata) = line(message) else { return }
        logger.debug("mesh: \(event) received", metadata: metadata.merging(["peer": "\(peer)"]) { a, _ in a })
    }

    static func sent(_ message: MeshNode.Message, to peer: String, logger: Logger) {
        guard logger.logLevel <= .debug, let (event, metadata) = line(message) else { return }
        logger.debug("mesh: \(event) sent", metadata: metadata.merging(["peer": "\(peer)"]) { a, _ in a })
    }
}
