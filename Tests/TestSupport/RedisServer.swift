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
    private let extra: [String]
    private var process: Process?

    public init(port: Int? = nil, persistentIn directory: URL? = nil, _ extra: [String] = []) async throws {
        self.port = try port ?? freeLoopbackPort()
        self.directory = directory
        self.extra = extra
        try await start()
    }

    public func start() async throws {
        var args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"]
        if let directory {
            args += ["--dir", directory.path, "--appendonly", "yes", "--appendfsync", "always"]
        } else {
            args += ["--appendonly", "no"]
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

    deinit { stop() }

    /// `redis-cli` against this server; its output lines. Output goes through a file, not a
    /// pipe: another test's child may inherit a pipe's end, and its end would never come.
    public func cli(_ args: String...) throws -> [String] {
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

    public var url: String { "redis://127.0.0.1:\(port)" }
}
