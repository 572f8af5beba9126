import NIOCore
import NIOPosix
import NIOSSL

/// A batch of commands written back to back on one connection, answered together: one command,
/// or a MULTI … EXEC transaction that no other command can interleave with.
struct RedisRequest {
    let commands: [[[UInt8]]]
    let promise: EventLoopPromise<[RedisValue]>
}

/// One Redis connection's protocol, on its event loop: requests are formatted by hiredis and
/// written at once (pipelining: many may be in flight), replies are parsed by hiredis' reader
/// and matched to requests in order. A protocol error or a closed connection fails every request
/// still waiting; nothing is retried here (the client decides).
final class RedisHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private let reader = RESP.Reader()
    private var waiting = CircularBuffer<(request: RedisRequest, replies: [RedisValue])>()
    /// Requests written and not fully answered.
    var inFlight: Int { waiting.count }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        var buffer = context.channel.allocator.buffer(capacity: 64 * request.commands.count)
        for command in request.commands { RESP.format(command, into: &buffer) }
        waiting.append((request, []))
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reader.feed(unwrapInboundIn(data))
        do throws(RedisError) {
            while let reply = try reader.next() {
                guard !waiting.isEmpty else { throw .protocolError("a reply nobody asked for") }
                waiting[waiting.startIndex].replies.append(reply)
                if waiting[waiting.startIndex].replies.count == waiting[waiting.startIndex].request.commands.count {
                    let done = waiting.removeFirst()
                    done.request.promise.succeed(done.replies)
                }
            }
        } catch {
            failAll(error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(.connectionClosed)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        while let w = waiting.popFirst() { w.request.promise.fail(error) }
    }
}

extension RedisHandler {
    /// A new connection to `address` with a `RedisHandler`, and the replies to `setup` (AUTH,
    /// SELECT, a question), all within `timeout`. An error reply is returned, not thrown: the
    /// caller knows which ones matter.
    static func connect(to address: RedisURL.Address, group: any EventLoopGroup, timeout: TimeAmount, tls: NIOSSLContext? = nil,
                        setup: [[[UInt8]]]) async throws -> (channel: any Channel, replies: [RedisValue]) {
        let channel: any Channel
        let loop = group.next()
        let handshake = loop.makePromise(of: String?.self)
        do {
            channel = try await ClientBootstrap(group: loop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(timeout)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls {
                            // Chain and hostname (or IP SAN) verified, as for https workers.
                            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: address.tlsServerName))
                            try channel.pipeline.syncOperations.addHandler(TLSHandshakeWaiter(handshake, peer: "the Redis server"))
                        }
                        try channel.pipeline.syncOperations.addHandler(RedisHandler())
                    }
                }
                .connect(host: address.host, port: address.port).get()
        } catch {
            handshake.fail(error)
            throw RedisError.unavailable("\(address): \(error)")
        }
        if tls == nil { handshake.succeed(nil) } else {
            // The handshake's own failure (an untrusted certificate, a name that does not match,
            // a client certificate wanted), not a bare "connection closed".
            do {
                let timer = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
                defer { timer.cancel() }
                _ = try await handshake.futureResult.get()
            } catch {
                channel.close(promise: nil)
                throw RedisError.unavailable("\(address): TLS handshake failed: \(error)")
            }
        }
        guard !setup.isEmpty else { return (channel, []) }
        let promise = channel.eventLoop.makePromise(of: [RedisValue].self)
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            promise.fail(RedisError.timedOut)
            channel.close(promise: nil)
        }
        channel.writeAndFlush(RedisRequest(commands: setup, promise: promise), promise: nil)
        do {
            let replies = try await promise.futureResult.get()
            timer.cancel()
            return (channel, replies)
        } catch {
            timer.cancel()
            channel.close(promise: nil)
            throw RedisError.unavailable("\(address): \(error)")
        }
    }

    /// AUTH (with a user when given) as a command, or nothing without a password.
    static func auth(user: String?, password: String?) -> [[[UInt8]]] {
        guard let password else { return [] }
        return [(user.map { ["AUTH", $0, password] } ?? ["AUTH", password]).map { Array($0.utf8) }]
    }
}
