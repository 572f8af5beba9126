import Foundation
import Synchronization

/// `--log-dir`: every log line also appended to `<dir>/smg.YYYY-MM-DD` (the UTC day; a new file
/// each day, named as the reference gateway names them). Lines are written by a queue of their
/// own, so a slow or full disk never holds up an event loop: at most `maxPending` lines wait,
/// lines past that are dropped, and the count of dropped lines is written once the writer
/// catches up. A write error (disk full, directory removed) is reported on stderr once per file,
/// not once per line.
final class DailyLogFile: Sendable {
    let directory: String
    /// Lines that may wait for the writer before new ones are dropped.
    let maxPending: Int
    /// The writer (internal so a test can hold it back, as a stalled disk would).
    let queue = DispatchQueue(label: "smg.log-file")
    private let pending = Atomic<Int>(0)
    private let dropped = Atomic<Int>(0)
    /// The open file and its day; touched only on `queue`.
    private let output = Mutex<(day: String, fd: Int32, failed: Bool)?>(nil)

    /// Creates the directory when it is missing (its parent must exist); an existing path must be
    /// a directory this process can write. Today's file is opened here, so a directory that cannot
    /// take it stops start-up instead of losing every line.
    init(directory: String, maxPending: Int = 10_000) throws(ConfigError) {
        self.directory = directory
        self.maxPending = maxPending
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw ConfigError("--log-dir \(directory): not a directory") }
        } else {
            guard mkdir(directory, 0o755) == 0 else { throw ConfigError("--log-dir \(directory): cannot create it: \(String(cString: strerror(errno)))") }
        }
        guard access(directory, W_OK | X_OK) == 0 else { throw ConfigError("--log-dir \(directory): not writable by this process") }
        let day = Self.day(of: Date())
        let fd = Self.openFile(Self.path(directory, day))
        guard fd >= 0 else { throw ConfigError("--log-dir \(directory): cannot open \(Self.path(directory, day)): \(String(cString: strerror(errno)))") }
        output.withLock { $0 = (day, fd, false) }
    }

    deinit { output.withLock { if let f = $0 { close(f.fd) } } }

    /// Queues one line (with its newline) for the file of the day it is written.
    func append(_ line: String) {
        guard pending.add(1, ordering: .relaxed).newValue <= maxPending else {
            pending.subtract(1, ordering: .relaxed)
            dropped.add(1, ordering: .relaxed)
            return
        }
        queue.async { [self] in
            let lost = dropped.exchange(0, ordering: .relaxed)
            if lost > 0 { writeLine("\(lost) log lines dropped: the log file fell behind\n") }
            writeLine(line)
            pending.subtract(1, ordering: .relaxed)
        }
    }

    /// Returns once every line queued so far is written (before the process exits).
    func flush() { queue.sync {} }

    /// A `TextOutputStream` onto this file, for log handlers.
    var stream: Stream { Stream(file: self) }

    struct Stream: TextOutputStream, Sendable {
        let file: DailyLogFile
        mutating func write(_ string: String) { file.append(string) }
    }

    private func writeLine(_ line: String) {
        output.withLock { current in
            let day = Self.day(of: Date())
            // A new day opens a new file; a file that could not be opened is tried again with
            // each line (the directory may come back), its failure reported once.
            if current == nil || current!.day != day || current!.fd < 0 {
                let failedToday = current.map { $0.day == day && $0.failed } ?? false
                if let old = current, old.fd >= 0 { close(old.fd) }
                current = (day, Self.openFile(Self.path(directory, day)), failedToday)
            }
            guard current!.fd >= 0 else { return reportOnce(&current!, "cannot open \(Self.path(directory, day)): \(String(cString: strerror(errno)))") }
            let ok = line.utf8CString.withUnsafeBufferPointer { buffer -> Bool in
                let count = buffer.count - 1  // without the terminating NUL
                return write(current!.fd, buffer.baseAddress, count) == count
            }
            if !ok { reportOnce(&current!, "cannot write \(Self.path(directory, day)): \(String(cString: strerror(errno)))") }
        }
    }

    private func reportOnce(_ file: inout (day: String, fd: Int32, failed: Bool), _ message: String) {
        guard !file.failed else { return }
        file.failed = true
        FileHandle.standardError.write(Data("smg: --log-dir: \(message); lines for this file are lost\n".utf8))
    }

    static func path(_ directory: String, _ day: String) -> String { (directory as NSString).appendingPathComponent("smg.\(day)") }

    private static func openFile(_ path: String) -> Int32 { open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) }

    /// "YYYY-MM-DD" of `date` in UTC.
    static func day(of date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02d", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday))
    }
}
