import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A bounded pool of pipelined Redis connections on the router's event loops (`--redis-url`,
/// `--redis-pool-max-size`). Each command or transaction goes out on one connection right away
/// (no waiting for the one before to be answered), on the least busy of up to `maxConnections`.
/// Connections are opened on demand (AUTH and SELECT first); a connection that fails is replaced
/// on a later command, after a backoff that doubles from 100 ms to 5 s, so a Redis that is down
/// costs a failed command, not a blocked event loop; when it is back, the next command reconnects.
public final class RedisClient: Sendable {
    public let url: RedisURL
    let maxConnections: Int
    let commandTimeout: TimeAmount
    private let group: any EventLoopGroup
    private let logger: Logger

    private enum Slot {
        case empty
        case connecting(EventLoopFuture<any Channel>)
        case ready(any Channel, inFlight: Int)
        case backingOff(until: NIODeadline, next: TimeAmount)
    }
    private struct State {
        var slots: [Slot]
        var closed = false
        var lastError = "not connected yet"
    }
    private let state: Mutex<State>

    public init(url: RedisURL, group: any EventLoopGroup, maxConnections: Int = 16, commandTimeout: TimeAmount = .seconds(2), logger: Logger) {
        self.url = url
        self.group = group
        self.maxConnections = max(1, maxConnections)
        self.commandTimeout = commandTimeout
        self.logger = logger
        state = Mutex(State(slots: Array(repeating: .empty, count: max(1, maxConnections))))
    }

    /// One command; an error reply is returned as `.error`, not thrown.
    public func send(_ args: [String]) async throws -> RedisValue {
        try await send(args.map { Array($0.utf8) })
    }

    public func send(_ args: [[UInt8]]) async throws -> RedisValue {
        try await batch([args])[0]
    }

    /// MULTI, the commands, EXEC, written as one unit on one connection (nothing else can slip
    /// in between): all of them are applied or none. Returns the replies of the commands.
    public func transaction(_ commands: [[String]]) async throws -> [RedisValue] {
        let bytes: [[[UInt8]]] = ([["MULTI"]] + commands + [["EXEC"]]).map { $0.map { Array($0.utf8) } }
        let replies = try await batch(bytes)
        guard case .array(let results) = replies.last! else {
            // EXECABORT (a command was malformed) or a null (the transaction was discarded).
            throw RedisError.refused(replies.first { if case .error = $0 { return true }; return false }.map { "\($0)" } ?? "\(replies.last!)")
        }
        return results
    }

    /// Writes `commands` back to back on one connection and waits for all their replies.
    func batch(_ commands: [[[UInt8]]]) async throws -> [RedisValue] {
        let (channel, index) = try await connection()
        defer { done(index, channel) }
        let promise = channel.eventLoop.makePromise(of: [RedisValue].self)
        // A large write gets the time to cross the network too (at a slow 8 MB/s): a big item
        // must not time out, which closes the pooled connection other callers' commands are on.
        let bytes = commands.reduce(0) { $0 + $1.reduce(0) { $0 + $1.count } }
        let timeout = channel.eventLoop.scheduleTask(in: commandTimeout + .microseconds(Int64(bytes) / 8)) {
            // The reply may still come, but could no longer be matched: drop the connection.
            promise.fail(RedisError.timedOut)
            channel.close(promise: nil)
        }
        channel.writeAndFlush(RedisRequest(commands: commands, promise: promise), promise: nil)
        defer { timeout.cancel() }
        return try await promise.futureResult.get()
    }

    /// The least busy ready connection, or a new one in an empty slot.
    private func connection() async throws -> (any Channel, Int) {
        enum Choice { case use(any Channel, Int), wait(EventLoopFuture<any Channel>, Int), opened(EventLoopFuture<any Channel>, Int, backoff: TimeAmount), none(String) }
        let now = NIODeadline.now()
        let choice: Choice = state.withLock { s in
            guard !s.closed else { return .none("the client is closed") }
            var best: (index: Int, load: Int)?
            var emptySlot: Int?
            var connecting: (EventLoopFuture<any Channel>, Int)?
            for (i, slot) in s.slots.enumerated() {
                switch slot {
                case .ready(let ch, let load) where ch.isActive:
                    if best == nil || load < best!.load { best = (i, load) }
                case .ready: s.slots[i] = .empty; if emptySlot == nil { emptySlot = i }
                case .empty: if emptySlot == nil { emptySlot = i }
                case .connecting(let f): if connecting == nil { connecting = (f, i) }
                case .backingOff(let until, _): if until <= now, emptySlot == nil { emptySlot = i }
                }
            }
            // A fresh connection only when every ready one already has work in flight.
            if let best, best.load == 0 || emptySlot == nil {
                if case .ready(let ch, let load) = s.slots[best.index] { s.slots[best.index] = .ready(ch, inFlight: load + 1); return .use(ch, best.index) }
            }
            if let i = emptySlot {
                // Claimed here, under the lock, so two commands never open the same slot.
                let backoff: TimeAmount
                if case .backingOff(_, let next) = s.slots[i] { backoff = next } else { backoff = .milliseconds(100) }
                let future = open()
                s.slots[i] = .connecting(future)
                return .opened(future, i, backoff: backoff)
            }
            if let (f, i) = connecting { return .wait(f, i) }
            if let best, case .ready(let ch, let load) = s.slots[best.index] { s.slots[best.index] = .ready(ch, inFlight: load + 1); return .use(ch, best.index) }
            return .none(s.lastError)
        }
        switch choice {
        case .use(let ch, let i): return (ch, i)
        case .none(let why): throw RedisError.unavailable(why)
        case .wait(let f, let i):
            let ch = try await f.get()
            state.withLock { s in if case .ready(let c, let load) = s.slots[i], c === ch { s.slots[i] = .ready(c, inFlight: load + 1) } }
            return (ch, i)
        case .opened(let future, let i, let backoff):
            do {
                let ch = try await future.get()
                state.withLock { s in s.slots[i] = .ready(ch, inFlight: 1) }
                ch.closeFuture.whenComplete { [weak self] _ in
                    self?.state.withLock { s in if case .ready(let c, _) = s.slots[i], c === ch { s.slots[i] = .empty } }
                }
                return (ch, i)
            } catch {
                let why = "\(url.description): \(error)"
                state.withLock { s in
                    s.slots[i] = .backingOff(until: .now() + backoff, next: min(backoff * 2, .seconds(5)))
                    s.lastError = why
                }
                throw RedisError.unavailable(why)
            }
        }
    }

    /// Connections open, and those with a command in flight (the pool gauges).
    public var poolUsage: (open: Int, inUse: Int) {
        state.withLock { s in
            s.slots.reduce(into: (open: 0, inUse: 0)) { sum, slot in
                if case .ready(_, let inFlight) = slot {
                    sum.open += 1
                    if inFlight > 0 { sum.inUse += 1 }
                }
            }
        }
    }

    private func done(_ index: Int, _ channel: any Channel) {
        state.withLock { s in
            if case .ready(let c, let load) = s.slots[index], c === channel { s.slots[index] = .ready(c, inFlight: max(0, load - 1)) }
        }
    }

    /// Connects, then AUTH and SELECT when the URL asks for them.
    private func open() -> EventLoopFuture<any Channel> {
        let url = self.url
        let timeout = commandTimeout
        return ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(RedisHandler()) }
            }
            .connect(host: url.host, port: url.port)
            .flatMap { channel in
                var setup: [[[UInt8]]] = []
                if let password = url.password {
                    setup.append((url.user.map { ["AUTH", $0, password] } ?? ["AUTH", password]).map { Array($0.utf8) })
                }
                if url.database != 0 { setup.append([Array("SELECT".utf8), Array(String(url.database).utf8)]) }
                guard !setup.isEmpty else { return channel.eventLoop.makeSucceededFuture(channel) }
                let promise = channel.eventLoop.makePromise(of: [RedisValue].self)
                let timer = channel.eventLoop.scheduleTask(in: timeout) { promise.fail(RedisError.timedOut) }
                channel.writeAndFlush(RedisRequest(commands: setup, promise: promise), promise: nil)
                return promise.futureResult.flatMapThrowing { replies in
                    timer.cancel()
                    if let error = replies.first(where: { if case .error = $0 { return true }; return false }) {
                        channel.close(promise: nil)
                        throw RedisError.unavailable("AUTH/SELECT refused: \(error)")
                    }
                    return channel
                }
            }
    }

    /// Closes every connection; later commands fail at once.
    public func close() {
        let channels: [any Channel] = state.withLock { s in
            s.closed = true
            return s.slots.compactMap { if case .ready(let c, _) = $0 { return c }; return nil }
        }
        for c in channels { c.close(promise: nil) }
    }
}
