import Foundation
import Mesh
@testable import Node
import Reliability
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The pieces of an in-place upgrade that another process talks to: the messages on the
/// takeover socket are read strictly, and descriptors really cross the socket (the end-to-end
/// upgrade is `InPlaceUpgradeTests`).
@Suite struct HandoverTests {
    static let offer = HandoverOffer(pid: 42, sockets: [.api, .metrics, .meshDatagram, .meshListener], meshName: "r1", workers: [
        .init(url: "http://10.0.0.5:30000", settings: ["labels": ["tier": "a"], "model_id": "llama"], health: .healthy),
        .init(url: "http://10.0.0.6:30000", settings: ["labels": [:], "worker_type": "prefill", "bootstrap_port": 8998], health: .unhealthy),
    ])

    @Test func anOfferAndAnAcceptanceSurviveTheirEncoding() throws {
        #expect(try HandoverOffer.decode(Self.offer.encoded(), descriptors: 4) == Self.offer)
        let accepted = HandoverAcceptance(pid: 43, took: [.api, .metrics], meshName: "r1")
        #expect(try HandoverAcceptance.decode(accepted.encoded()) == accepted)
    }

    @Test(arguments: [
        (#"[]"#, "not a JSON object"),
        (#"{"version":2,"pid":1,"sockets":[],"workers":[]}"#, "version"),
        (#"{"version":1,"pid":0,"sockets":[],"workers":[]}"#, "pid"),
        (#"{"version":1,"pid":1,"sockets":["api","api"],"workers":[]}"#, "unknown or repeated"),
        (#"{"version":1,"pid":1,"sockets":["stdin"],"workers":[]}"#, "unknown or repeated"),
        (#"{"version":1,"pid":1,"sockets":["api"],"workers":[]}"#, "came with 0 descriptors"),
        (#"{"version":1,"pid":1,"sockets":[],"workers":[{"url":"http://a"}]}"#, "lacks url, settings or health"),
        (#"{"version":1,"pid":1,"sockets":[],"workers":[{"url":"http://a","settings":{},"health":"fine"}]}"#, "lacks url, settings or health"),
        (#"{"version":1,"pid":1,"sockets":[],"mesh_name":7,"workers":[]}"#, "mesh_name"),
    ])
    func aMalformedOfferIsRefusedWithItsReason(text: String, reason: String) {
        #expect {
            try HandoverOffer.decode(Array(text.utf8), descriptors: 0)
        } throws: { "\($0)".contains(reason) }
    }

    @Test func anOfferOfTooManyWorkersIsRefused() {
        let many = (0...HandoverOffer.maxWorkers).map { HandoverOffer.WorkerState(url: "http://10.0.\($0 / 250).\($0 % 250):1", settings: [:], health: .unknown) }
        #expect(throws: HandoverError.self) { try HandoverOffer.decode(HandoverOffer(pid: 1, sockets: [], meshName: nil, workers: many).encoded(), descriptors: 0) }
    }

    @Test func aDescriptorCrossesTheSocketAndStillWorks() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("smg-handover-\(UUID().uuidString.prefix(8))").path
        defer { unlink(path) }
        let server = try UnixSocket.listen(at: path)
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600, "only the owner may connect")
        let client = try UnixSocket.connect(to: path, timeout: .seconds(5))
        let accepted = try #require(try server.accept(timeoutMs: 2000))
        #expect(try accepted.peerUserID() == geteuid())

        // A bound UDP socket goes over; what is sent to its port arrives on the received copy.
        let udp = try BoundSocket.make(.datagram, host: "127.0.0.1", port: 0)
        defer { close(udp) }
        try accepted.send(Array("hello".utf8), descriptors: [udp])
        let (bytes, fds) = try client.receive()
        #expect(bytes == Array("hello".utf8))
        #expect(fds.count == 1)
        let received = try #require(fds.first)
        defer { close(received) }
        let described = try #require(BoundSocket.describe(received))
        #expect(described.kind == .datagram && described.port == BoundSocket.describe(udp)?.port)
        #expect(fcntl(received, F_GETFD) & FD_CLOEXEC != 0, "received descriptors are close-on-exec")
    }

    @Test func aMessageOverTheLimitIsRefusedAndANonSocketFileIsNeverReplaced() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smg-handover-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("precious").path
        _ = FileManager.default.createFile(atPath: file, contents: Data("keep".utf8))
        #expect(throws: UnixSocket.Failure.self) { try UnixSocket.listen(at: file) }
        #expect(FileManager.default.contents(atPath: file) == Data("keep".utf8))

        let path = dir.appendingPathComponent("s").path
        let server = try UnixSocket.listen(at: path)
        let client = try UnixSocket.connect(to: path, timeout: .seconds(5))
        let accepted = try #require(try server.accept(timeoutMs: 2000))
        // A length prefix past the limit: refused before anything that large is read.
        let n = UInt32(UnixSocket.maxBytes + 1)
        var header = [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)]
        #expect(write(client.fd, &header, 4) == 4)
        #expect { try accepted.receive() } throws: { "\($0)".contains("over the limit") }
        // A peer that closes mid-message.
        let client2 = try UnixSocket.connect(to: path, timeout: .seconds(5))
        let accepted2 = try #require(try server.accept(timeoutMs: 2000))
        var partial: [UInt8] = [0, 0, 0, 10, 1, 2]
        #expect(write(client2.fd, &partial, 6) == 6)
        client2.close()
        #expect { try accepted2.receive() } throws: { "\($0)".contains("closed") }
    }

    @Test func aPredecessorsVerdictHoldsOnlyUntilTheSuccessorsOwn() {
        var h = HealthState(HealthCheckConfig())
        let first = h.inherit(.healthy)
        #expect(first && h.isHealthy)
        let second = h.inherit(.unhealthy)
        #expect(!second, "a verdict is taken once, while there is none")
        var checked = HealthState(HealthCheckConfig())
        checked.record(success: false)
        let taken = checked.inherit(.unhealthy)
        #expect(!taken && checked.status == .unknown, "one failure is not yet a verdict, but it is the router's own")
    }
}
