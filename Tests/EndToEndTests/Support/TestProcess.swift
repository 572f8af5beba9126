import Foundation
import TestSupport
import Synchronization

/// Where `swift build` put the executables under test (next to the test bundle).
enum Binaries {
    static let directory: URL = {
        if let dir = ProcessInfo.processInfo.environment["SMG_BIN_DIR"] { return URL(fileURLWithPath: dir) }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // On Linux the test bundle is itself an executable inside the build directory;
        // elsewhere it may be nested in a .xctest bundle.
        while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("smg").path), dir.path != "/" {
            dir = dir.deletingLastPathComponent()
        }
        return dir
    }()
    static var smg: URL { directory.appendingPathComponent("smg") }
    static var simWorker: URL { directory.appendingPathComponent("smg-sim-worker") }
}

/// A child process started by a test: output captured, readiness awaited on a printed line,
/// always killed when the test lets go of it.
///
/// Output goes to temporary files, not pipes: with tests running in parallel, other children
/// inherit pipe ends and a pipe may never report its end; a file is simply read back.
final class TestProcess: @unchecked Sendable {
    let process = Process()
    private let outFile: URL
    private let errFile: URL
    let name: String

    init(_ executable: URL, _ arguments: [String], name: String, environment: [String: String] = [:]) throws {
        self.name = name
        process.executableURL = executable
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("smg-test-\(UUID().uuidString)")
        outFile = base.appendingPathExtension("out")
        errFile = base.appendingPathExtension("err")
        _ = FileManager.default.createFile(atPath: outFile.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errFile.path, contents: nil)
        let out = try FileHandle(forWritingTo: outFile)
        let err = try FileHandle(forWritingTo: errFile)
        defer {
            try? out.close()
            try? err.close()
        }
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var stdout: String { (try? String(contentsOf: outFile, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOf: errFile, encoding: .utf8)) ?? "" }

    /// Waits until stdout has a line containing `marker` and returns that line.
    func waitForLine(containing marker: String, timeout: Duration = .seconds(30)) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let line = stdout.split(separator: "\n").first(where: { $0.contains(marker) }) { return String(line) }
            if !process.isRunning {
                throw TestFailure("\(name) exited (\(process.terminationStatus)) before printing '\(marker)'; stderr: \(stderr)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("\(name) did not print '\(marker)' within \(timeout); stdout: \(stdout) stderr: \(stderr)")
    }

    func signal(_ sig: Int32) { if process.isRunning { kill(process.processIdentifier, sig) } }

    /// Waits for the process to exit and returns its status, or nil if it is still running at
    /// the deadline.
    func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning { return nil }
        return process.terminationStatus
    }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: outFile)
        try? FileManager.default.removeItem(at: errFile)
    }
}

/// A simulated worker process on a free loopback port.
final class SimWorkerProcess: SimWorkerUnderTest, @unchecked Sendable {
    let process: TestProcess
    let url: String
    let port: Int

    init(name: String, port requested: Int = 0, _ extra: [String] = []) async throws {
        arguments = extra
        process = try TestProcess(Binaries.simWorker, ["--port", String(requested), "--name", name] + extra, name: "sim worker \(name)")
        let line = try await process.waitForLine(containing: "listening on")
        guard let range = line.range(of: #"https?://127\.0\.0\.1:\d+"#, options: .regularExpression) else { throw TestFailure("no URL in '\(line)'") }
        url = String(line[range])
        port = Int(url.split(separator: ":").last!)!
        bootstrapPort = line.range(of: #"bootstrap=\d+"#, options: .regularExpression).flatMap { Int(line[$0].dropFirst(10)) }
    }

    /// A prefill worker's KV bootstrap port (`--role prefill`).
    let bootstrapPort: Int?
    /// The data-parallel ranks it was started with (`--dp-size`).
    var dpSize: Int { arguments.firstIndex(of: "--dp-size").flatMap { Int(arguments[$0 + 1]) } ?? 1 }
    private let arguments: [String]
}

/// The real `smg` binary on free loopback ports (the API and metrics ports are read from its
/// ready line).
final class RouterProcess: RouterUnderTest, @unchecked Sendable {
    let process: TestProcess
    let port: Int
    let metricsPort: Int

    init(_ arguments: [String], environment: [String: String] = [:], waitForWorkers: Bool = true) async throws {
        process = try TestProcess(Binaries.smg, ["--host", "127.0.0.1", "--port", "0", "--prometheus-host", "127.0.0.1", "--prometheus-port", "0"] + arguments,
                                  name: "smg", environment: environment)
        let line = try await process.waitForLine(containing: "smg ready:")
        func port(after key: String) throws -> Int {
            guard let r = line.range(of: key + #"=https?://127\.0\.0\.1:\d+"#, options: .regularExpression),
                  let p = Int(line[r].split(separator: ":").last!) else { throw TestFailure("no \(key) port in '\(line)'") }
            return p
        }
        self.port = try port(after: "api")
        self.metricsPort = try port(after: "metrics")
        if waitForWorkers { try await waitForStartupWorkers(arguments) }
    }
}

