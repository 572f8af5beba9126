/// A Redis reply (RESP2): what hiredis' reader parsed, copied into Swift values.
public enum RedisValue: Equatable, Sendable {
    case string([UInt8])
    case status(String)
    case integer(Int)
    case array([RedisValue])
    case null
    /// An error reply (`-ERR …`): the command was refused; the connection is fine.
    case error(String)

    public var text: String? {
        switch self {
        case .string(let b): return String(decoding: b, as: UTF8.self)
        case .status(let s): return s
        default: return nil
        }
    }
    public var int: Int? {
        switch self {
        case .integer(let i): return i
        case .string(let b): return Int(String(decoding: b, as: UTF8.self))
        default: return nil
        }
    }
    public var array: [RedisValue]? { if case .array(let a) = self { return a }; return nil }
}

/// Why a command got no reply.
public enum RedisError: Error, CustomStringConvertible, Equatable {
    /// No connection could be made (or all are waiting out their reconnection backoff).
    case unavailable(String)
    /// The reply did not come within the command timeout (the connection is dropped: replies
    /// on it could no longer be matched to their commands).
    case timedOut
    /// The connection closed with the command unanswered.
    case connectionClosed
    /// The bytes from the server were not RESP.
    case protocolError(String)
    /// Redis refused a transaction (EXECABORT: one of its commands was malformed). A bug in
    /// what the router sent, not an outage: history answers 500, not 503.
    case refused(String)
    /// A durable write is on the master, but fewer replicas confirmed it within the WAIT
    /// timeout than were asked for: a master that died now could take it along.
    case notReplicated(acked: Int, wanted: Int)

    public var description: String {
        switch self {
        case .unavailable(let why): return "Redis unavailable: \(why)"
        case .refused(let why): return "Redis refused the transaction: \(why)"
        case .timedOut: return "Redis did not answer within the command timeout"
        case .connectionClosed: return "the Redis connection closed before the reply"
        case .protocolError(let why): return "Redis protocol error: \(why)"
        case .notReplicated(let acked, let wanted): return "the write reached the Redis master, but \(acked) of the \(wanted) replicas asked for confirmed it in time"
        }
    }
}
