import Foundation
import TestSupport
import Testing

/// `--log-dir` and `--log-json`: the log also in a file per UTC day (`smg.YYYY-MM-DD`), written
/// off the event loops and complete when the router exits; bad directories stop start-up.
@Suite(.serialized) struct LogFileTests {
    static func scratch() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("smg-logs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: false)
        return url
    }

    /// The lines of every log file in `dir` (one, unless the test ran across midnight UTC).
    static func fileLines(_ dir: URL) throws -> [String] {
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(!names.isEmpty && names.allSatisfy { $0.range(of: #"^smg\.\d{4}-\d{2}-\d{2}$"#, options: .regularExpression) != nil }, "\(names)")
        return try names.flatMap { try String(contentsOf: dir.appendingPathComponent($0), encoding: .utf8).split(separator: "\n").map(String.init) }
    }

    @Test func jsonLinesGoToTheConsoleAndToADailyFileInADirectoryMadeForThem() async throws {
        let base = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: base) }
        let dir = base.appendingPathComponent("logs")  // missing: made at start-up
        let w = try await SimWorkerProcess(name: "w0")
        let r = try await RouterProcess(["--worker-urls", w.url, "--log-dir", dir.path, "--log-json"])
        r.process.signal(SIGTERM)
        #expect(await r.process.waitForExit(timeout: .seconds(30)) == 0)

        let lines = try Self.fileLines(dir)
        let objects = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(objects.count == lines.count && !lines.isEmpty, "every line is a JSON object: \(lines)")
        for o in objects {
            #expect(o["timestamp"] is String && o["level"] is String && o["message"] is String && o["target"] as? String == "smg", "\(o)")
        }
        #expect(objects.contains { $0["message"] as? String == "worker added" && $0["worker"] as? String == w.url && $0["level"] as? String == "INFO" })
        // The last line before exit is in the file: the writer is drained before the process ends.
        #expect(objects.contains { $0["message"] as? String == "signal received" && $0["signal"] as? String == "SIGTERM" }, "\(lines.suffix(3))")
        #expect(objects.last?["message"] as? String == "shutdown complete", "\(lines.suffix(3))")
        // The console has the same lines (each handler reads the clock itself: timestamps aside).
        func untimed(_ line: some StringProtocol) -> String {
            String(line).replacingOccurrences(of: #""timestamp":"[^"]*""#, with: "", options: .regularExpression)
        }
        let console = Set(r.process.stderr.split(separator: "\n").map(untimed))
        #expect(lines.map(untimed).allSatisfy(console.contains), "\(r.process.stderr)")
    }

    @Test func textByDefaultAndADirectoryThatCannotHoldLogsStopsStartUp() async throws {
        let base = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: base) }
        let w = try await SimWorkerProcess(name: "w0")
        let r = try await RouterProcess(["--worker-urls", w.url, "--log-dir", base.path])
        r.process.signal(SIGTERM)
        #expect(await r.process.waitForExit(timeout: .seconds(30)) == 0)
        let lines = try Self.fileLines(base)
        #expect(lines.contains { $0.contains("info smg:") && $0.contains("worker added") && $0.contains(w.url) }, "\(lines)")
        #expect(!lines.contains { $0.hasPrefix("{") })

        let file = base.appendingPathComponent("not-a-directory")
        _ = FileManager.default.createFile(atPath: file.path, contents: Data())
        for (path, message) in [(file.path, "not a directory"), (base.path + "/missing/child", "cannot create it")] {
            let p = try TestProcess(Binaries.smg, ["--host", "127.0.0.1", "--port", "0", "--prometheus-port", "0", "--worker-urls", w.url, "--log-dir", path], name: "smg")
            #expect(await p.waitForExit(timeout: .seconds(10)) == 2)
            #expect(p.stderr.contains("--log-dir \(path): \(message)"), "\(p.stderr)")
        }
    }
}
