import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A bounded pool of pipelined Redis connections on the router's event loops (`--redis-url`,
/// `--redis-pool-max-size`). Each command or transaction goes out on one connection right away
/// (no waiting for the one before to be answered), on the least busy of up to `maxConnections`.
/// Connections are opened on demand (AUTH, SELECT and ROLE first); a connection that fails is replaced
/// on a later command, after a backoff that doubles from 100 ms to 5 s, so a Redis that is down
/// costs a failed command, not a blocked event loop; when it is back, the next command reconnects.
///
/// With a `redis-sentinel://` URL the server is the master the Sentinels name (`RedisSentinel`):
/// each new connection checks with `ROLE` that it reached a master; a failover closes every
/// connection to the old one (`+switch-master`, or the first READONLY/MASTERDOWN reply or failed
/// connect, whichever comes first). A command the old master refused (READONLY, MASTERDOWN) or
/// that found no connection was not applied, so it is sent once more to the new master; one
/// whose connection broke after it was written may have been applied, so only a caller that
/// says it is `idempotent` (reads) gets it sent again.
///
/// Durable writes (`transaction(_:durable: true)`) are followed on the same connection by
/// `WAIT`: the reply counts the replicas that have everything this connection wrote, and a
/// write fewer replicas hold than `durability` asks for throws `notReplicated` (it is on the
/// master; the caller defers it and writes it again, which the history writes allow). With
/// `auto` each durable write also asks ROLE, so the count follows replicas that come and go.
public final class RedisClient: Sendable {
    public let url: RedisURL
    let maxConnections: Int
    let commandTimeout: TimeAmount
    let durability: Durability
    private let group: any EventLoopGroup
    private let logger: Logger
    private let sentinel: RedisSentinel?
    /// For `rediss://` URLs: the TLS context of each new connection, read when it is made (so a
    /// SIGHUP reload reaches the next one).
    private let tls: (@Sendable () -> NIOSSLContext)?

    /// How many replicas a durable write waits for (`--redis-wait-replicas`,
    /// `--redis-wait-timeout-ms`).
    public struct Durability: Sendable, Equatable {
        public enum Replicas: Sendable, Equatable {
            /// 1 when the master has a replica (its `ROLE`, asked at each connect and with each
            /// durable write), else none.
            case auto
            case count(Int)
        }
        public var replicas: Replicas
        public var timeout: TimeAmount
        public static let `default` = Durability(replicas: .auto, timeout: .milliseconds(1000))
        public static let none = Durability(replicas: .count(0), timeout: .zero)
        public init(replicas: Replicas, timeout: TimeAmount) {
            self.replicas = replicas
            self.timeout = timeout
        }
    }

    private enum Slot {
        case empty
        case connecting(EventLoopFuture<Connected>)
        case ready(any Channel, inFlight: Int, at: RedisURL.Address)
        case backingOff(until: NIODeadline, next: TimeAmount)
    }
    /// A new connection and the server it reached.
    private struct Connected: Sendable {
        let channel: any Channel
        let address: RedisURL.Address
    }
    private struct State {
        var slots: [Slot]
        var closed = false
        var lastError = "not connected yet"
        /// Replicas connected to the master at the last connect or durable write (`ROLE`).
        var replicas = 0
    }
    /// The pool's books, in a class of their own so the Sentinel's callback can hold them.
    private final class Books: Sendable {
        private let mutex: Mutex<State>
        init(_ state: State) { mutex = Mutex(state) }
        func withLock<R: Sendable>(_ body: (inout State) -> R) -> R { mutex.withLock { body(&$0) } }

        /// Closes the ready connections to the servers `matching` picks, their slots emptied;
        /// `endingBackoffs`: slots waiting out a backoff may connect at once too.
        func closeConnections(where matching: (RedisURL.Address) -> Bool, endingBackoffs: Bool = false) {
            let stale: [any Channel] = withLock { s in
                var stale: [any Channel] = []
                for i in s.slots.indices {
                    switch s.slots[i] {
                    case .ready(let ch, _, let at) where matching(at): stale.append(ch); s.slots[i] = .empty
                    case .backingOff where endingBackoffs: s.slots[i] = .empty
                    default: break
                    }
                }
                return stale
            }
            for ch in stale { ch.close(promise: nil) }
        }
    }
    private let state: Books

    public init(url: RedisURL, group: any EventLoopGroup, maxConnections: Int = 16, commandTimeout: TimeAmount = .seconds(2),
                durability: Durability = .none, tls: (@Sendable () -> NIOSSLContext)? = nil, logger: Logger) {
        self.url = url
        // A rediss:// URL is never served in clear: without a context, the system's trust store.
        let tls: (@Sendable () -> NIOSSLContext)? = url.tls ? (tls ?? { Self.systemTrust }) : nil
        self.tls = tls
        self.group = group
        self.maxConnections = max(1, maxConnections)
        self.commandTimeout = commandTimeout
        self.durability = durability
        self.logger = logger
        let state = Books(State(slots: Array(repeating: .empty, count: max(1, maxConnections))))
        self.state = state
        if case .sentinel(let master, let sentinels, let password) = url.server {
            sentinel = RedisSentinel(master: master, sentinels: sentinels, password: password, group: group, timeout: commandTimeout,
                                     tls: tls, logger: logger) { master in
                // Connections to anyone else are to a master no longer: closed, and a slot
                // waiting out a backoff (the old master was down) may connect at once.
                state.closeConnections(where: { $0 != master }, endingBackoffs: true)
            }
        } else {
            sentinel = nil
        }
    }

    /// TLS with full verification against the system's trust store (no file is read to make it).
    private static let systemTrust: NIOSSLContext = {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        return try! NIOSSLContext(configuration: configuration)
    }()

    /// Whether the server is asked of Sentinels (a `redis-sentinel://` URL).
    public var followsSentinels: Bool { sentinel != nil }

    /// Follows the Sentinels' failovers until cancelled (nothing to do for a `redis://` URL).
    public func followSentinels() async {
        await sentinel?.follow()
    }

    /// One command; an error reply is returned as `.error`, not thrown. `idempotent`: sending
    /// it twice does no harm (a read), so a broken connection may cost a second try.
    public func send(_ args: [String], idempotent: Bool = false) async throws -> RedisValue {
        try await send(args.map { Array($0.utf8) }, idempotent: idempotent)
    }

    public func send(_ args: [[UInt8]], idempotent: Bool = false) async throws -> RedisValue {
        try await batch([args], idempotent: idempotent)[0]
    }

    /// MULTI, the commands, EXEC, written as one unit on one connection (nothing else can slip
    /// in between): all of them are applied or none. Returns the replies of the commands.
    /// `durable`: WAIT for the replicas `durability` asks for, and throw `notReplicated` when
    /// fewer confirm it within its timeout.
    ///
    /// With `auto`, ROLE follows in the same round trip, so the client learns of a replica that
    /// attached or left after its connections were made (after a failover the new master has
    /// none until the old one comes back as its replica). A write not waited for although the
    /// master has a replica now gets its WAIT in a second round trip on the same connection
    /// (WAIT covers everything the connection wrote); one that no replica confirmed passes only
    /// when the master has none left to confirm it (a replica that died; a master cut off from
    /// its replica still lists it, so its writes are reported).
    public func transaction(_ commands: [[String]], durable: Bool = false) async throws -> [RedisValue] {
        let wanted = durable ? waitFor() : 0
        let asksRole = durable && durability.replicas == .auto
        let waitMs = String(durability.timeout.nanoseconds / 1_000_000)
        var all = [["MULTI"]] + commands + [["EXEC"]]
        if wanted > 0 { all.append(["WAIT", String(wanted), waitMs]) }
        if asksRole { all.append(["ROLE"]) }
        // A master that has a replica the write did not wait for (the first write on a new
        // connection, or a replica that attached since): WAIT now, on the same connection.
        let lateWait: [[UInt8]] = ["WAIT", "1", waitMs].map { Array($0.utf8) }
        var followUp: FollowUp?
        if asksRole && wanted == 0 {
            followUp = { replies in Self.role(replies.last).replicas > 0 ? [lateWait] : nil }
        }
        let replies = try await batch(all.map { $0.map { Array($0.utf8) } }, followUp: followUp)
        let exec = replies[commands.count + 1]
        guard case .array(let results) = exec else {
            // EXECABORT (a command was malformed) or a null (the transaction was discarded).
            throw RedisError.refused(replies.first { if case .error = $0 { return true }; return false }.map { "\($0)" } ?? "\(exec)")
        }
        guard durable else { return results }
        var (waitedFor, acked) = wanted > 0 ? (wanted, replies[commands.count + 2].int ?? 0) : (0, 0)
        if replies.count > all.count { (waitedFor, acked) = (1, replies.last?.int ?? 0) }
        var replicasNow: Int?
        if asksRole {
            let role = Self.role(replies[all.count - 1])
            if role.name == "master" {
                replicasNow = role.replicas
                state.withLock { $0.replicas = role.replicas }
            }
        }
        // Short of what was asked, unless the master has no replica left to confirm it.
        if acked < waitedFor, replicasNow != 0 { throw RedisError.notReplicated(acked: acked, wanted: waitedFor) }
        return results
    }

    /// The replicas a durable write waits for now.
    private func waitFor() -> Int {
        switch durability.replicas {
        case .count(let n): return n
        case .auto: return state.withLock { $0.replicas } > 0 ? 1 : 0
        }
    }

    /// Writes `commands` back to back on one connection and waits for all their replies; with
    /// Sentinels, once more on the new master when the old one could not have applied them.
    /// `followUp` may ask for more commands on the same connection once the replies are in
    /// (their replies are appended).
    func batch(_ commands: [[[UInt8]]], idempotent: Bool = false, followUp: FollowUp? = nil) async throws -> [RedisValue] {
        guard let sentinel else { return try await batchOnce(commands, followUp).replies }
        do {
            let (replies, address) = try await batchOnce(commands, followUp)
            guard let refusal = replies.lazy.compactMap(Self.masterGone).first else { return replies }
            // Refused, so not applied: the next connection asks the Sentinels again.
            logger.info("Redis master refused a write; asking the Sentinels again", metadata: ["address": "\(address)", "reply": "\(refusal)"])
            sentinel.forget(address)
            state.closeConnections(where: { $0 == address })
            return try await batchOnce(commands, followUp).replies
        } catch RedisError.unavailable {
            // Never sent: no connection could be made (the master was forgotten if it was its fault).
            return try await batchOnce(commands, followUp).replies
        } catch let error as RedisError where idempotent && (error == .connectionClosed || error == .timedOut) {
            return try await batchOnce(commands, followUp).replies
        }
    }
    typealias FollowUp = @Sendable ([RedisValue]) -> [[[UInt8]]]?

    /// READONLY (the master was demoted to a replica) or MASTERDOWN (a replica whose master is
    /// gone): the command was refused, not applied.
    static func masterGone(_ reply: RedisValue) -> String? {
        guard case .error(let message) = reply, message.hasPrefix("READONLY") || message.hasPrefix("MASTERDOWN") else { return nil }
        return String(message.prefix(120))
    }

    private func batchOnce(_ commands: [[[UInt8]]], _ followUp: FollowUp?) async throws -> (replies: [RedisValue], address: RedisURL.Address) {
        let (channel, index, address) = try await connection()
        defer { done(index, channel) }
        var replies = try await exchange(commands, on: channel)
        if let more = followUp?(replies) { replies += try await exchange(more, on: channel) }
        return (replies, address)
    }

    private func exchange(_ commands: [[[UInt8]]], on channel: any Channel) async throws -> [RedisValue] {
        let promise = channel.eventLoop.makePromise(of: [RedisValue].self)
        // A large write gets the time to cross the network too (at a slow 8 MB/s): a big item
        // must not time out, which closes the pooled connection other callers' commands are on.
        // A WAIT gets its own timeout on top.
        let bytes = commands.reduce(0) { $0 + $1.reduce(0) { $0 + $1.count } }
        let waits = commands.contains { $0.first == Self.wait } ? durability.timeout : .zero
        let timeout = channel.eventLoop.scheduleTask(in: commandTimeout + waits + .microseconds(Int64(bytes) / 8)) {
            // The reply may still come, but could no longer be matched: drop the connection.
            promise.fail(RedisError.timedOut)
            channel.close(promise: nil)
        }
        channel.writeAndFlush(RedisRequest(commands: commands, promise: promise), promise: nil)
        defer { timeout.cancel() }
        return try await promise.futureResult.get()
    }
    private static let wait = Array("WAIT".utf8)

    /// The least busy ready connection, or a new one in an empty slot.
    private func connection() async throws -> (any Channel, Int, RedisURL.Address) {
        enum Choice {
            case use(any Channel, Int, RedisURL.Address), wait(EventLoopFuture<Connected>, Int)
            case opened(EventLoopFuture<Connected>, Int, backoff: TimeAmount), none(String)
        }
        let now = NIODeadline.now()
        let choice: Choice = state.withLock { s in
            guard !s.closed else { return .none("the client is closed") }
            var best: (index: Int, load: Int)?
            var emptySlot: Int?
            var connecting: (EventLoopFuture<Connected>, Int)?
            for (i, slot) in s.slots.enumerated() {
                switch slot {
                case .ready(let ch, let load, _) where ch.isActive:
                    if best == nil || load < best!.load { best = (i, load) }
                case .ready: s.slots[i] = .empty; if emptySlot == nil { emptySlot = i }
                case .empty: if emptySlot == nil { emptySlot = i }
                case .connecting(let f): if connecting == nil { connecting = (f, i) }
                case .backingOff(let until, _): if until <= now, emptySlot == nil { emptySlot = i }
                }
            }
            // A fresh connection only when every ready one already has work in flight.
            if let best, best.load == 0 || emptySlot == nil {
                if case .ready(let ch, let load, let at) = s.slots[best.index] { s.slots[best.index] = .ready(ch, inFlight: load + 1, at: at); return .use(ch, best.index, at) }
            }
            if let i = emptySlot {
                // Claimed here, under the lock, so two commands never open the same slot.
                let backoff: TimeAmount
                if case .backingOff(_, let next) = s.slots[i] { backoff = next } else { backoff = .milliseconds(100) }
                let promise = group.next().makePromise(of: Connected.self)
                promise.completeWithTask { try await self.open() }
                s.slots[i] = .connecting(promise.futureResult)
                return .opened(promise.futureResult, i, backoff: backoff)
            }
            if let (f, i) = connecting { return .wait(f, i) }
            if let best, case .ready(let ch, let load, let at) = s.slots[best.index] { s.slots[best.index] = .ready(ch, inFlight: load + 1, at: at); return .use(ch, best.index, at) }
            return .none(s.lastError)
        }
        switch choice {
        case .use(let ch, let i, let at): return (ch, i, at)
        case .none(let why): throw RedisError.unavailable(why)
        case .wait(let f, let i):
            let c = try await f.get()
            state.withLock { s in if case .ready(let ch, let load, let at) = s.slots[i], ch === c.channel { s.slots[i] = .ready(ch, inFlight: load + 1, at: at) } }
            return (c.channel, i, c.address)
        case .opened(let future, let i, let backoff):
            do {
                let c = try await future.get()
                let ch = c.channel
                state.withLock { s in s.slots[i] = .ready(ch, inFlight: 1, at: c.address) }
                logger.debug("Redis connection opened", metadata: ["address": "\(c.address)", "slot": "\(i)"])
                ch.closeFuture.whenComplete { [weak self, logger] _ in
                    self?.state.withLock { s in if case .ready(let other, _, _) = s.slots[i], other === ch { s.slots[i] = .empty } }
                    logger.debug("Redis connection closed", metadata: ["address": "\(c.address)", "slot": "\(i)"])
                }
                return (ch, i, c.address)
            } catch {
                let why = "\(error)"
                logger.debug("Redis connection failed", metadata: ["slot": "\(i)", "reason": "\(why)", "retry_in_ms": "\(backoff.nanoseconds / 1_000_000)"])
                state.withLock { s in
                    s.slots[i] = .backingOff(until: .now() + backoff, next: min(backoff * 2, .seconds(5)))
                    s.lastError = why
                }
                throw error as? RedisError ?? RedisError.unavailable(why)
            }
        }
    }

    /// The servers the pool's open connections are to (one, but for the moment of a failover).
    var connectedServers: Set<RedisURL.Address> {
        state.withLock { s in
            Set(s.slots.compactMap { if case .ready(let ch, _, let at) = $0, ch.isActive { return at }; return nil })
        }
    }

    /// Connections open, and those with a command in flight (the pool gauges).
    public var poolUsage: (open: Int, inUse: Int) {
        state.withLock { s in
            s.slots.reduce(into: (open: 0, inUse: 0)) { sum, slot in
                if case .ready(_, let inFlight, _) = slot {
                    sum.open += 1
                    if inFlight > 0 { sum.inUse += 1 }
                }
            }
        }
    }

    private func done(_ index: Int, _ channel: any Channel) {
        state.withLock { s in
            if case .ready(let c, let load, let at) = s.slots[index], c === channel { s.slots[index] = .ready(c, inFlight: max(0, load - 1), at: at) }
        }
    }

    /// Connects to the server (with Sentinels: the master they name), then AUTH and SELECT when
    /// the URL asks for them, and ROLE: with Sentinels the server must say it is the master
    /// (else it is forgotten and the Sentinels asked again); its replicas count for `auto`
    /// durability. A server that refuses ROLE (an ACL) is taken to have no replicas.
    private func open() async throws -> Connected {
        let address: RedisURL.Address
        switch url.server {
        case .direct(let a): address = a
        case .sentinel: address = try await sentinel!.current()
        }
        var setup = RedisHandler.auth(user: url.user, password: url.password)
        if url.database != 0 { setup.append([Array("SELECT".utf8), Array(String(url.database).utf8)]) }
        setup.append([Array("ROLE".utf8)])
        let channel: any Channel
        let replies: [RedisValue]
        do {
            (channel, replies) = try await RedisHandler.connect(to: address, group: group, timeout: commandTimeout, tls: tls?(), setup: setup)
        } catch {
            sentinel?.forget(address)
            throw error  // `unavailable`, naming the address
        }
        if let error = replies.dropLast().first(where: { if case .error = $0 { return true }; return false }) {
            channel.close(promise: nil)
            throw RedisError.unavailable("\(address): AUTH/SELECT refused: \(error)")
        }
        let role = Self.role(replies.last)
        if let sentinel, role.name != "master" {
            channel.close(promise: nil)
            sentinel.forget(address)
            throw RedisError.unavailable("\(address) is not the master of '\(sentinel.master)' (ROLE: \(role.name ?? "refused"))")
        }
        state.withLock { $0.replicas = role.replicas }
        return Connected(channel: channel, address: address)
    }

    /// The role a ROLE reply names, and for a master its connected replicas.
    static func role(_ reply: RedisValue?) -> (name: String?, replicas: Int) {
        guard case .array(let parts)? = reply, let name = parts.first?.text else { return (nil, 0) }
        guard name == "master", parts.count >= 3, case .array(let replicas) = parts[2] else { return (name, 0) }
        return (name, replicas.count)
    }

    /// Closes every connection; later commands fail at once.
    public func close() {
        let channels: [any Channel] = state.withLock { s in
            s.closed = true
            return s.slots.compactMap { if case .ready(let c, _, _) = $0 { return c }; return nil }
        }
        for c in channels { c.close(promise: nil) }
    }
}
