import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real `redis-server` for tests: a free loopback port, ready when it accepts connections,
/// killed (SIGKILL: no shutdown, nothing written that was not already) by `stop()` or when the
/// test lets go of it. Without a directory it keeps nothing on disk; with one it writes an
/// append-only file there (fsync on every write), so a restart finds the data again.
public final class RedisServer: @unchecked Sendable {
    public let port: Int
    private let directory: URL?
    /// Where a server that keeps nothing still writes (a replica's copy of its master's data):
    /// a directory of its own, removed with it, never the tests' working directory.
    private let scratch: URL
    private let extra: [String]
    private var process: Process?
    /// TLS only (`--tls-port`, no plain port), when set.
    public let tls: TLS?

    /// A server certificate and key (PEM), the CA that client certificates are checked against,
    /// and whether a client must present one (mutual TLS).
    public struct TLS: Sendable {
        public var certificatePath: String
        public var keyPath: String
        public var caPath: String
        public var requireClientCertificate: Bool
        public init(certificatePath: String, keyPath: String, caPath: String, requireClientCertificate: Bool) {
            (self.certificatePath, self.keyPath, self.caPath, self.requireClientCertificate) = (certificatePath, keyPath, caPath, requireClientCertificate)
        }
    }

    public init(port: Int? = nil, persistentIn directory: URL? = nil, tls: TLS? = nil, _ extra: [String] = []) async throws {
        self.port = try port ?? freeLoopbackPort()
        self.directory = directory
        self.tls = tls
        self.extra = extra
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("smg-redis-scratch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        try await start()
    }

    public func start() async throws {
        var args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"]
        if let directory {
            args += ["--dir", directory.path, "--appendonly", "yes", "--appendfsync", "always"]
        } else {
            args += ["--dir", scratch.path, "--appendonly", "no"]
        }
        if let tls {
            args += ["--port", "0", "--tls-port", String(port), "--tls-cert-file", tls.certificatePath, "--tls-key-file", tls.keyPath,
                     "--tls-ca-cert-file", tls.caPath, "--tls-auth-clients", tls.requireClientCertificate ? "yes" : "no"]
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        p.arguments = args + extra
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        try await eventually(timeout: .seconds(10), "redis-server accepts connections on \(port)") { acceptsConnections(self.port) }
    }

    public func stop() {
        guard let p = process else { return }
        process = nil
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: scratch)
    }

    /// Sends `signal` to the server (SIGSTOP: it stops answering and replicating; SIGCONT: on again).
    public func signal(_ signal: Int32) {
        if let p = process, p.isRunning { kill(p.processIdentifier, signal) }
    }

    /// `redis-cli` against this server; its output lines. Output goes through a file, not a
    /// pipe: another test's child may inherit a pipe's end, and its end would never come.
    public func cli(_ args: String...) throws -> [String] {
        // Over TLS, redis-cli shows the server's own certificate as its client certificate.
        let tlsArgs = tls.map { ["--tls", "--cacert", $0.caPath, "--cert", $0.certificatePath, "--key", $0.keyPath] } ?? []
        return try Self.cli(port: port, tlsArgs + args)
    }

    /// `redis-cli -p PORT ARGS…` against any server on loopback (a Sentinel too).
    public static func cli(port: Int, _ args: String...) throws -> [String] {
        try cli(port: port, args)
    }

    static func cli(port: Int, _ args: [String]) throws -> [String] {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("redis-cli-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: file.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: file) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
        p.arguments = ["-p", String(port)] + args
        let out = try FileHandle(forWritingTo: file)
        defer { try? out.close() }
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return String(decoding: (try? Data(contentsOf: file)) ?? Data(), as: UTF8.self).split(separator: "\n").map(String.init)
    }

    public var url: String { "\(tls == nil ? "redis" : "rediss")://127.0.0.1:\(port)" }
}

/// A real Redis Sentinel (`redis-server CONFIG --sentinel`) watching one master on loopback, with
/// timers short enough for tests: the master is judged down after `downAfterMs` without an
/// answer, and `quorum` Sentinels must agree. Its config file lives in a directory of its own
/// (Sentinel rewrites it); killed and removed by `stop()` or when the test lets go of it.
public final class RedisSentinelServer: @unchecked Sendable {
    public let port: Int
    private let directory: URL
    private var process: Process?
    /// TLS only, to clients and to the servers it watches, when set.
    public let tls: RedisServer.TLS?

    public init(master: String = "mymaster", masterPort: Int, quorum: Int, downAfterMs: Int = 1000, failoverTimeoutMs: Int = 5000,
                password: String? = nil, masterPassword: String? = nil, tls: RedisServer.TLS? = nil) async throws {
        port = try freeLoopbackPort()
        self.tls = tls
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("smg-sentinel-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var lines = [
            "port \(port)", "bind 127.0.0.1", "daemonize no", "dir \(directory.path)",
            "sentinel monitor \(master) 127.0.0.1 \(masterPort) \(quorum)",
            "sentinel down-after-milliseconds \(master) \(downAfterMs)",
            "sentinel failover-timeout \(master) \(failoverTimeoutMs)",
            "sentinel parallel-syncs \(master) 1",
        ]
        if let password { lines.append("requirepass \(password)") }
        if let masterPassword { lines.append("sentinel auth-pass \(master) \(masterPassword)") }
        if let tls {
            lines[0] = "port 0"
            lines += ["tls-port \(port)", "tls-cert-file \(tls.certificatePath)", "tls-key-file \(tls.keyPath)", "tls-ca-cert-file \(tls.caPath)",
                      "tls-replication yes", "tls-auth-clients \(tls.requireClientCertificate ? "yes" : "no")"]
        }
        let config = directory.appendingPathComponent("sentinel.conf")
        try (lines.joined(separator: "\n") + "\n").write(to: config, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        p.arguments = [config.path, "--sentinel"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        try await eventually(timeout: .seconds(10), "redis-sentinel accepts connections on \(port)") { acceptsConnections(self.port) }
    }

    public func stop() {
        if let p = process {
            process = nil
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }

    public var address: String { "127.0.0.1:\(port)" }

    /// `redis-cli` against this Sentinel (over TLS when it speaks only TLS).
    public func cli(_ args: String...) throws -> [String] {
        let tlsArgs = tls.map { ["--tls", "--cacert", $0.caPath, "--cert", $0.certificatePath, "--key", $0.keyPath] } ?? []
        return try RedisServer.cli(port: port, tlsArgs + args)
    }
}

/// Redis as it is run for high availability, on loopback: a master with one replica in sync,
/// and three Sentinels (quorum 2, the master judged down after 1 s) that know the replica and
/// each other. Ready when the constructor returns; everything is killed when it is let go.
public final class RedisSentinelDeployment: @unchecked Sendable {
    public let master: RedisServer
    public let replica: RedisServer
    public let sentinels: [RedisSentinelServer]
    public static let masterName = "mymaster"

    /// `tls`: every server and Sentinel speaks only TLS, replication and Sentinels' links too.
    public init(tls: RedisServer.TLS? = nil) async throws {
        let master = try await RedisServer(tls: tls, tls == nil ? [] : ["--tls-replication", "yes"])
        let replica = try await RedisServer(tls: tls, ["--replicaof", "127.0.0.1", String(master.port)] + (tls == nil ? [] : ["--tls-replication", "yes"]))
        var sentinels: [RedisSentinelServer] = []
        for _ in 0..<3 { sentinels.append(try await RedisSentinelServer(master: Self.masterName, masterPort: master.port, quorum: 2, tls: tls)) }
        (self.master, self.replica, self.sentinels) = (master, replica, sentinels)
        try await eventually(timeout: .seconds(10), "the replica is in sync") {
            (try? replica.cli("ROLE"))?.contains("connected") == true
        }
        // Each Sentinel has found the replica (through the master) and the other Sentinels.
        try await eventually(timeout: .seconds(20), "the Sentinels know the replica and each other") {
            sentinels.allSatisfy { s in
                let info = (try? s.cli("SENTINEL", "MASTER", Self.masterName)) ?? []
                return Self.field(info, "num-slaves") == "1" && Self.field(info, "num-other-sentinels") == "2"
            }
        }
    }

    private static func field(_ lines: [String], _ name: String) -> String? {
        guard let i = lines.firstIndex(of: name), i + 1 < lines.count else { return nil }
        return lines[i + 1]
    }

    /// `--redis-url` for this deployment.
    public var url: String { "\(master.tls == nil ? "redis" : "rediss")-sentinel://" + sentinels.map(\.address).joined(separator: ",") + "#" + Self.masterName }

    /// The port of the master the Sentinels name now.
    public func namedMasterPort() -> Int? {
        (try? sentinels[0].cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self.masterName)).flatMap { $0.last.flatMap(Int.init) }
    }

    /// Asks the Sentinels to promote the replica while the master is alive.
    public func forceFailover() throws {
        let answer = try sentinels[0].cli("SENTINEL", "FAILOVER", Self.masterName)
        guard answer == ["OK"] else { throw FailoverRefused(answer: answer) }
    }

    public struct FailoverRefused: Error { public let answer: [String] }
}
