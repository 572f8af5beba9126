import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// The master a set of Redis Sentinels agree on, for a `redis-sentinel://` URL, and where it
/// moves. The client asks `current()` before each new connection and checks the answer itself
/// (`ROLE` must say master); it calls `forget` when the master it was given fails it (cannot be
/// reached, or answers READONLY/MASTERDOWN), so the next connection asks the Sentinels again.
/// `follow()` subscribes to `+switch-master` on one Sentinel after another and reports a
/// failover the moment the Sentinels make it, instead of when a command first fails.
final class RedisSentinel: Sendable {
    let master: String
    let sentinels: [RedisURL.Address]
    private let password: String?
    private let group: any EventLoopGroup
    private let timeout: TimeAmount
    /// The TLS context of each new connection (`rediss-sentinel://`), read when it is made, so a
    /// reload (SIGHUP) reaches the next one.
    private let tls: (@Sendable () -> NIOSSLContext)?
    private let logger: Logger
    /// Told each new master, before any connection is made to it.
    private let moved: @Sendable (RedisURL.Address) -> Void

    private struct Books {
        /// The master as last named; nil: ask the Sentinels.
        var current: RedisURL.Address?
        /// The master last logged, so a failover is one line, not one per connection.
        var announced: RedisURL.Address?
        /// The Sentinel to ask first: the last one that answered.
        var first = 0
    }
    private let books = Mutex(Books())

    init(master: String, sentinels: [RedisURL.Address], password: String?, group: any EventLoopGroup, timeout: TimeAmount,
         tls: (@Sendable () -> NIOSSLContext)? = nil, logger: Logger, moved: @escaping @Sendable (RedisURL.Address) -> Void) {
        self.tls = tls
        self.master = master
        self.sentinels = sentinels
        self.password = password
        self.group = group
        self.timeout = timeout
        self.logger = logger
        self.moved = moved
    }

    /// The master's address: the one last named, or what the first Sentinel that knows the
    /// master says (`SENTINEL get-master-addr-by-name`).
    func current() async throws -> RedisURL.Address {
        if let known = books.withLock({ $0.current }) { return known }
        let first = books.withLock { $0.first }
        var problems: [String] = []
        for k in sentinels.indices {
            let i = (first + k) % sentinels.count
            do {
                let ask = RedisHandler.auth(user: nil, password: password) + [["SENTINEL", "get-master-addr-by-name", master].map { Array($0.utf8) }]
                let (channel, replies) = try await RedisHandler.connect(to: sentinels[i], group: group, timeout: timeout, tls: tls?(), setup: ask)
                channel.close(promise: nil)
                if let refused = replies.first(where: { if case .error = $0 { return true }; return false }) {
                    problems.append("Sentinel \(sentinels[i]) refused: \(refused)")
                    continue
                }
                guard let address = Self.address(replies.last) else {
                    problems.append("Sentinel \(sentinels[i]) does not know master '\(master)'")
                    continue
                }
                books.withLock { $0.first = i }
                named(address)
                return address
            } catch {
                problems.append("Sentinel \(error)")
            }
        }
        throw RedisError.unavailable("no Sentinel named a master for '\(master)': \(problems.joined(separator: "; "))")
    }

    /// `[ip, port]`, the answer to get-master-addr-by-name; nil for a null or anything else.
    static func address(_ reply: RedisValue?) -> RedisURL.Address? {
        guard case .array(let pair)? = reply, pair.count == 2, let host = pair[0].text, !host.isEmpty, host.utf8.count <= 255,
              let port = pair[1].int, (1...65535).contains(port) else { return nil }
        return RedisURL.Address(host: host, port: port)
    }

    /// The master at `address` failed the client: the next connection asks the Sentinels again.
    func forget(_ address: RedisURL.Address) {
        books.withLock { if $0.current == address { $0.current = nil } }
    }

    /// A master named by a Sentinel (an answer, or a `+switch-master`).
    private func named(_ address: RedisURL.Address) {
        let (isNew, previous): (Bool, RedisURL.Address?) = books.withLock { b in
            b.current = address
            defer { b.announced = address }
            return (b.announced != address, b.announced)
        }
        guard isNew else { return }
        if let previous {
            logger.warning("Redis master moved", metadata: ["master": "\(master)", "from": "\(previous)", "to": "\(address)"])
        } else {
            logger.info("Redis master located by Sentinel", metadata: ["master": "\(master)", "address": "\(address)"])
        }
        moved(address)
    }

    /// Subscribes to `+switch-master` on one Sentinel after another (a lost subscription moves on
    /// to the next after a second), until the task is cancelled.
    func follow() async {
        var i = books.withLock { $0.first }
        while !Task.isCancelled {
            let sentinel = sentinels[i % sentinels.count]
            i += 1
            do {
                try await subscribe(to: sentinel)
            } catch {
                logger.debug("Sentinel subscription lost", metadata: ["sentinel": "\(sentinel)", "reason": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// One subscription, until its connection closes (or goes quiet: pinged every 5 s, closed
    /// after 15 s without a word) or the task is cancelled.
    private func subscribe(to sentinel: RedisURL.Address) async throws {
        let (stream, pushes) = AsyncStream<RedisValue>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let context = tls?()
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: sentinel.tlsServerName))
                    }
                    try channel.pipeline.syncOperations.addHandler(RedisPushHandler(pushes))
                }
            }
            .connect(host: sentinel.host, port: sentinel.port).get()
        var request = channel.allocator.buffer(capacity: 128)
        for command in RedisHandler.auth(user: nil, password: password) + [[Array("SUBSCRIBE".utf8), Array("+switch-master".utf8)]] {
            RESP.format(command, into: &request)
        }
        channel.writeAndFlush(request, promise: nil)
        let ping: ByteBuffer = {
            var b = channel.allocator.buffer(capacity: 16)
            RESP.format([Array("PING".utf8)], into: &b)
            return b
        }()
        let heard = Atomic<UInt64>(MonotonicClock.nowMs())
        let keepAlive = channel.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(5), delay: .seconds(5)) { _ in
            if MonotonicClock.nowMs() - heard.load(ordering: .relaxed) > 15_000 { channel.close(promise: nil) } else { channel.writeAndFlush(ping, promise: nil) }
        }
        defer { keepAlive.cancel() }
        try await withTaskCancellationHandler {
            for await push in stream {
                heard.store(MonotonicClock.nowMs(), ordering: .relaxed)
                if case .error(let why) = push { throw RedisError.unavailable("Sentinel \(sentinel) refused the subscription: \(why)") }
                if let address = switchedMaster(push) { named(address) }
            }
        } onCancel: {
            channel.close(promise: nil)
        }
    }

    /// The new master of a `+switch-master` message about this master
    /// (`["message", "+switch-master", "<name> <old ip> <old port> <new ip> <new port>"]`).
    func switchedMaster(_ push: RedisValue) -> RedisURL.Address? {
        guard case .array(let parts) = push, parts.count == 3, parts[0].text == "message", parts[1].text == "+switch-master",
              let payload = parts[2].text else { return nil }
        let words = payload.split(separator: " ")
        guard words.count == 5, words[0] == master, let port = Int(words[4]), (1...65535).contains(port), words[3].utf8.count <= 255 else { return nil }
        return RedisURL.Address(host: String(words[3]), port: port)
    }
}

/// A subscribed connection's replies, every one handed on as it comes (nothing to match them
/// to: after SUBSCRIBE the server speaks when it likes). The stream ends when the connection does.
private final class RedisPushHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let reader = RESP.Reader()
    private let pushes: AsyncStream<RedisValue>.Continuation

    init(_ pushes: AsyncStream<RedisValue>.Continuation) { self.pushes = pushes }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reader.feed(unwrapInboundIn(data))
        do throws(RedisError) {
            while let reply = try reader.next() { pushes.yield(reply) }
        } catch {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        pushes.finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// A client's `followSentinels()` as a service of the router's group: it runs until graceful
/// shutdown.
struct RedisSentinelFollower: Service {
    let client: RedisClient
    func run() async throws {
        await cancelWhenGracefulShutdown { await client.followSentinels() }
    }
}
