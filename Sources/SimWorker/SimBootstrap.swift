import Foundation
import NIOCore
import NIOPosix

/// The simulated KV-cache handshake of PD disaggregation, as SGLang's makes decode depend on
/// prefill: a prefill worker runs a bootstrap server and remembers the `bootstrap_room` of each
/// request it was sent; a decode worker, before generating, connects to `bootstrap_host`:
/// `bootstrap_port` and asks for its room. It is answered once the prefill has seen that room
/// (waiting up to 3 s for the prefill request, which the router sends at the same time), and
/// fails otherwise. A router that sends the two halves to unrelated workers, forgets a field or
/// sends different rooms is caught.
///
/// The protocol is one line each way: `room <n>\n`, answered `ok <prefill worker name> <rank>\n`
/// (the data-parallel rank that computed it, -1 for none) or `unknown\n`.
enum SimBootstrap {
    /// What a decode worker must be told, one entry per batch element.
    struct Target: Equatable {
        var host: String
        var port: Int?
        var room: UInt64
    }

    /// The rooms of a request (one, or one per element of a batch); nil when absent or malformed.
    static func rooms(_ json: [String: Any]) -> [UInt64]? {
        func room(_ v: Any) -> UInt64? {
            // (Foundation bridges 0 and 1 to Bool too, so no Bool test here.)
            guard let n = v as? NSNumber, n.int64Value >= 0 else { return nil }
            return n.uint64Value
        }
        switch json["bootstrap_room"] {
        case let list as [Any]:
            let rooms = list.compactMap(room)
            return rooms.count == list.count && !rooms.isEmpty ? rooms : nil
        case .some(let v): return room(v).map { [$0] }
        case .none: return nil
        }
    }

    /// The bootstrap fields of a decode request; nil when one is missing or the arrays disagree.
    static func targets(_ json: [String: Any]) -> [Target]? {
        guard let rooms = rooms(json) else { return nil }
        func list(_ key: String) -> [Any]? {
            guard let v = json[key] else { return nil }
            if let a = v as? [Any] { return a }
            return Array(repeating: v, count: rooms.count)
        }
        guard let hosts = list("bootstrap_host"), let ports = list("bootstrap_port"), hosts.count == rooms.count, ports.count == rooms.count else { return nil }
        var out: [Target] = []
        for i in rooms.indices {
            guard let host = hosts[i] as? String, !host.isEmpty else { return nil }
            let port: Int?
            if ports[i] is NSNull { port = nil } else if let p = (ports[i] as? NSNumber)?.intValue, (1...65535).contains(p) { port = p } else { return nil }
            out.append(Target(host: host, port: port, room: rooms[i]))
        }
        return out
    }

    /// Starts a prefill worker's bootstrap server.
    static func listen(host: String, port: Int, state: SimWorkerState, group: any EventLoopGroup) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(ServerHandler(state: state)) }
            }
            .bind(host: host, port: port).get()
    }

    /// Asks a prefill's bootstrap server for `room`: the prefill worker's name and the rank
    /// that computed the room when it has it, an error otherwise.
    static func ask(_ target: Target, on loop: any EventLoop) -> EventLoopFuture<(name: String, rank: Int)> {
        guard let port = target.port else { return loop.makeSucceededFuture(("", -1)) }
        let answer = loop.makePromise(of: String.self)
        ClientBootstrap(group: loop)
            .connectTimeout(.seconds(1))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(ClientHandler(answer: answer)) }
            }
            .connect(host: target.host, port: port)
            .whenComplete { result in
                switch result {
                case .failure(let error): answer.fail(error)
                case .success(let channel):
                    channel.writeAndFlush(ByteBuffer(string: "room \(target.room)\n"), promise: nil)
                    // The prefill waits up to 3 s for the room; a little more here.
                    let timeout = loop.scheduleTask(in: .seconds(4)) { answer.fail(ChannelError.connectTimeout(.seconds(4))) }
                    answer.futureResult.whenComplete { _ in
                        timeout.cancel()
                        channel.close(promise: nil)
                    }
                }
            }
        return answer.futureResult.flatMapThrowing { line in
            let parts = line.split(separator: " ")
            guard parts.count == 2, let rank = Int(parts[1]) else { throw ChannelError.inputClosed }
            return (String(parts[0]), rank)
        }
    }

    /// Collects bytes until a newline.
    private struct Lines {
        var pending: [UInt8] = []
        mutating func feed(_ buffer: ByteBuffer) -> [String] {
            pending += buffer.readableBytesView
            var lines: [String] = []
            while let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                lines.append(String(decoding: pending[..<nl], as: UTF8.self))
                pending.removeSubrange(...nl)
            }
            if pending.count > 1024 { pending.removeAll() }
            return lines
        }
    }

    private final class ServerHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let state: SimWorkerState
        var lines = Lines()
        init(state: SimWorkerState) { self.state = state }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            for line in lines.feed(unwrapInboundIn(data)) {
                let parts = line.split(separator: " ")
                guard parts.count == 2, parts[0] == "room", let room = UInt64(parts[1]) else {
                    context.writeAndFlush(NIOAny(ByteBuffer(string: "unknown\n")), promise: nil)
                    continue
                }
                wait(for: room, context: context, deadline: NIODeadline.now() + .seconds(3))
            }
        }

        private func wait(for room: UInt64, context: ChannelHandlerContext, deadline: NIODeadline) {
            if let rank = state.roomRank(room) {
                context.writeAndFlush(NIOAny(ByteBuffer(string: "ok \(state.options.workerName) \(rank)\n")), promise: nil)
            } else if NIODeadline.now() > deadline {
                context.writeAndFlush(NIOAny(ByteBuffer(string: "unknown\n")), promise: nil)
            } else {
                context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(2)) { self.wait(for: room, context: context, deadline: deadline) }
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    private final class ClientHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let answer: EventLoopPromise<String>
        var lines = Lines()
        init(answer: EventLoopPromise<String>) { self.answer = answer }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let line = lines.feed(unwrapInboundIn(data)).first else { return }
            if line.hasPrefix("ok ") { answer.succeed(String(line.dropFirst(3))) } else { answer.fail(ChannelError.inputClosed) }
        }

        func channelInactive(context: ChannelHandlerContext) { answer.fail(ChannelError.inputClosed) }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { answer.fail(error); context.close(promise: nil) }
    }
}
