import Foundation
@testable import Node
import Testing

/// `--log-dir`'s writer: a stalled disk costs lines, counted, never a blocked caller.
@Suite struct DailyLogFileTests {
    @Test func linesPastTheBoundAreDroppedAndCountedOnceTheWriterCatchesUp() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smg-daily-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = try DailyLogFile(directory: dir.path, maxPending: 2)
        file.queue.suspend()  // the disk stalls
        for i in 1...5 { file.append("line \(i)\n") }  // returns at once
        file.queue.resume()
        file.flush()
        file.append("line 6\n")
        file.flush()
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(names.count == 1 && names[0].hasPrefix("smg."))
        let text = try String(contentsOf: dir.appendingPathComponent(names[0]), encoding: .utf8)
        #expect(text == "3 log lines dropped: the log file fell behind\nline 1\nline 2\nline 6\n", "\(text)")
    }
}
