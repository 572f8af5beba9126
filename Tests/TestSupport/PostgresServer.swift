import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real PostgreSQL server for tests (Debian's `postgresql` package): a cluster made by `initdb`
/// in a directory of its own, on a free loopback port, the user `smg` with password `secret`
/// (scram-sha-256 over TCP, so a wrong password is refused), fsync off. As root the server runs as
/// the `postgres` user (PostgreSQL refuses root). `stop()` is an immediate shutdown (SIGQUIT:
/// no checkpoint, crash recovery on the next start, nothing committed lost); everything is
/// removed when the test lets go of it.
public final class PostgresServer: @unchecked Sendable {
    public let port: Int
    public let directory: URL
    private var process: Process?
    public static let user = "smg"
    public static let password = "secret"

    /// Where Debian puts the server's programs (the newest major version installed).
    public static let bin: URL? = {
        let root = URL(fileURLWithPath: "/usr/lib/postgresql")
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []).compactMap(Int.init).sorted()
        return versions.last.map { root.appendingPathComponent("\($0)/bin") }
    }()
    public static var isInstalled: Bool { bin.map { FileManager.default.isExecutableFile(atPath: $0.appendingPathComponent("postgres").path) } ?? false }

    public init() async throws {
        guard let bin = Self.bin else { throw TestFailure("PostgreSQL is not installed (apt-get install postgresql)") }
        port = try freeLoopbackPort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("smg-pg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let passwordFile = directory.appendingPathComponent("pw")
        try Self.password.write(to: passwordFile, atomically: true, encoding: .utf8)
        if getuid() == 0 { try Self.run("/bin/chown", ["-R", "postgres:postgres", directory.path]) }
        try Self.run(bin.appendingPathComponent("initdb").path, ["-D", directory.appendingPathComponent("data").path, "-U", Self.user,
                                                                 "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile=\(passwordFile.path)",
                                                                 "-E", "UTF8", "--no-sync"], asPostgres: true)
        try await start()
    }

    public func start() async throws {
        let bin = Self.bin!
        let p = Process()
        let args = [bin.appendingPathComponent("postgres").path, "-D", directory.appendingPathComponent("data").path, "-p", String(port),
                    "-k", directory.path, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                    "-c", "full_page_writes=off", "-c", "shared_buffers=16MB", "-c", "max_connections=60"]
        if getuid() == 0 {
            // setpriv runs postgres in its own place (same pid), so a signal reaches the server.
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            p.arguments = ["--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + args
        } else {
            p.executableURL = URL(fileURLWithPath: args[0])
            p.arguments = Array(args.dropFirst())
        }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        let ready = bin.appendingPathComponent("pg_isready").path
        let port = self.port
        try await eventually(timeout: .seconds(30), "PostgreSQL accepts connections on \(port)") {
            (try? Self.run(ready, ["-h", "127.0.0.1", "-p", String(port), "-q"])) != nil
        }
    }

    public func stop() {
        guard let p = process else { return }
        process = nil
        if p.isRunning { kill(p.processIdentifier, SIGQUIT) }
        p.waitUntilExit()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// `--postgres-db-url` for this server (its `postgres` database, plain TCP).
    public var url: String { "postgres://\(Self.user):\(Self.password)@127.0.0.1:\(port)/postgres?sslmode=disable" }

    @discardableResult
    static func run(_ path: String, _ args: [String], asPostgres: Bool = false) throws -> Int32 {
        let p = Process()
        if asPostgres && getuid() == 0 {
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            p.arguments = ["--reuid=postgres", "--regid=postgres", "--init-groups", "--", path] + args
        } else {
            p.executableURL = URL(fileURLWithPath: path)
            p.arguments = args
        }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw TestFailure("\(path) exited with \(p.terminationStatus)") }
        return p.terminationStatus
    }
}
