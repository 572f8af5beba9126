#if canImport(Glibc)
import Glibc
#endif
import Logging
@testable import Mesh
import MeshCore
import NIOCore
import NIOPosix
import Testing
import TestSupport

/// The mesh shell over real sockets on loopback: two services, sealed UDP and TCP on one port.
@Suite(.serialized) struct MeshServiceTests {
    static let key = MeshKeyring.generate()

    static func monotonicMs() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    /// Starts a service on a free loopback port (UDP and TCP both), retrying if another
    /// process takes the port between the probe and the bind.
    static func start(_ name: String, peers: [String], group: any EventLoopGroup,
                      configure: (inout MeshService.Config) -> Void = { _ in }) async throws -> MeshService {
        var lastError: (any Error)?
        for _ in 0..<5 {
            let probe = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
            let port = probe.localAddress!.port!
            try await probe.close()
            var c = MeshService.Config(name: name, bindHost: "127.0.0.1", port: port, advertise: "127.0.0.1:\(port)", peers: peers,
                                       keyring: try MeshKeyring(parsing: key))
            c.node.swim.protocolPeriodMs = 250
            c.node.swim.probeTimeoutMs = 100
            configure(&c)
            let service = MeshService(config: c, generation: monotonicMs(), logger: Logger(label: name), clock: monotonicMs)
            do {
                try await service.start(group: group)
                return service
            } catch { lastError = error }
        }
        throw lastError!
    }

    @Test func aJoiningNodeGetsAStoreTooBigForADatagramOverTCP() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let a = try await Self.start("a", peers: [], group: group)
        for i in 0..<2000 { a.publish(store: "sessions", key: "model\u{0}conversation-\(i)", value: Array("worker-\(i % 7)".utf8)) }
        let b = try await Self.start("b", peers: [a.config.advertise], group: group)
        // Join (one protocol period or two), then one anti-entropy round (1 s) moves the store;
        // 10 s leaves room for a loaded 2-core machine.
        try await eventually(timeout: .seconds(10), "b holds a's 2,000 sessions") { b.entries(of: "sessions").count == 2000 }
        #expect(b.entries(of: "sessions")["model\u{0}conversation-1999"] == Array("worker-4".utf8))
        #expect(a.status().stats.framesOut > 0 && b.status().stats.framesIn > 0, "the answer (~150 KB) went as TCP frames")
        #expect(b.status().stats.dropped.isEmpty, "nothing refused: \(b.status().stats.dropped)")
        // A deletion on b reaches a by a pushed datagram, and once both have seen it the
        // tombstone is collected on both.
        b.publish(store: "sessions", key: "model\u{0}conversation-5", value: nil)
        try await eventually(timeout: .seconds(10), "a sees the deletion") { a.entries(of: "sessions").count == 1999 }
        try await eventually(timeout: .seconds(10), "the tombstone is collected on both") {
            a.status().stores.allSatisfy { $0.tombstones == 0 } && b.status().stores.allSatisfy { $0.tombstones == 0 }
        }
        let peer = a.status().members.first { $0.member.name == "b" }
        #expect(peer?.lagWrites == 0, "b has seen every write a has: lag \(String(describing: peer?.lagWrites))")
        await b.leave()
        await a.leave()
        try await group.shutdownGracefully()
    }

    @Test func garbageAndOversizedFramesAreRefusedAndCounted() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let a = try await Self.start("a", peers: [], group: group)
        let port = a.config.port
        func sendRaw(_ bytes: [UInt8], waitForClose: Bool) async throws {
            let c = try RawConnection(port: port)
            c.send(bytes)
            guard waitForClose else { return }
            try await eventually(timeout: .seconds(5), "the service closed the connection") { c.isClosed }
        }
        // A frame claiming 2 GiB: refused before anything is allocated.
        try await sendRaw([0x7F, 0xFF, 0xFF, 0xFF, 1, 2, 3], waitForClose: true)
        try await eventually(timeout: .seconds(5), "the oversized frame is counted") { a.status().stats.dropped["oversized_untrusted"] == 1 }
        // A well-framed packet sealed under another cluster's key.
        let other = Sealer(keyring: try MeshKeyring(parsing: MeshKeyring.generate()), maxPacket: MeshService.frameLimit)
        let sealed = other.seal(Array(repeating: 9, count: 3000))
        let length = UInt32(sealed.count)
        try await sendRaw(Self.lengthPrefix(Int(length)) + sealed, waitForClose: false)
        try await eventually(timeout: .seconds(5), "the foreign frame is counted") { a.status().stats.dropped["unknown_key"] == 1 }
        #expect(a.status().stats.framesIn == 0)
        await a.leave()
        try await group.shutdownGracefully()
    }

    /// A raw TCP connection to a service's mesh port (as a stranger without the key would open).
    final class RawConnection {
        let fd: Int32
        init(port: Int) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = UInt16(port).bigEndian
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else { close(fd); throw CancellationError() }
            var tv = timeval(tv_sec: 0, tv_usec: 20_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
        deinit { close(fd) }
        @discardableResult func send(_ bytes: [UInt8]) -> Bool { bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count }
        /// True once the other side closed (a read sees the end of the stream or a reset).
        var isClosed: Bool {
            var b = [UInt8](repeating: 0, count: 16)
            let n = recv(fd, &b, 16, 0)
            return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        }
    }

    static func lengthPrefix(_ n: Int) -> [UInt8] { [UInt8(n >> 24 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] }

    @Test func strangersCannotMakeANodeBufferMuchOrHoldConnections() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let a = try await Self.start("a", peers: [], group: group) { c in
            c.frameDeadline = .seconds(1)
            c.maxInboundConnections = 4
        }
        let port = a.config.port
        // Before a connection proved it holds the key, a frame may be 64 KiB, not 64 MiB.
        let big = try RawConnection(port: port)
        big.send(Self.lengthPrefix(1 << 20) + [1, 2, 3])
        try await eventually(timeout: .seconds(5), "a 1 MiB frame from a stranger closes the connection") { big.isClosed }
        #expect(a.status().stats.dropped["oversized_untrusted"] == 1)
        // A frame trickling in a byte at a time is cut at its deadline.
        let slow = try RawConnection(port: port)
        slow.send(Self.lengthPrefix(1000) + [0])
        let started = ContinuousClock.now
        while !slow.isClosed, ContinuousClock.now - started < .seconds(6) {
            slow.send([0])
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(slow.isClosed && ContinuousClock.now - started >= .seconds(1), "cut at the frame deadline")
        #expect(a.status().stats.dropped["frame_deadline"] == 1)
        // A well-framed message sealed under another key ends the connection.
        let foreign = try RawConnection(port: port)
        let sealed = Sealer(keyring: try MeshKeyring(parsing: MeshKeyring.generate()), maxPacket: 1 << 16).seal([9, 9, 9])
        foreign.send(Self.lengthPrefix(sealed.count) + sealed)
        try await eventually(timeout: .seconds(5), "the foreign frame closes its connection") { foreign.isClosed }
        // At most four inbound connections at once.
        // (The listener accepts in arrival order, so the fifth is handled after the four.)
        let held = try (0..<4).map { _ in try RawConnection(port: port) }
        let extra = try RawConnection(port: port)
        try await eventually(timeout: .seconds(5), "the fifth connection is closed") { extra.isClosed }
        #expect(a.status().stats.dropped["connection_limit"] == 1)
        #expect(held.allSatisfy { !$0.isClosed }, "the four held ones stay (until idle)")
        await a.leave()
        try await group.shutdownGracefully()
    }
}
