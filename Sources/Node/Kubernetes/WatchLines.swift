/// Cuts a watch's body into its events: the API server writes one JSON object per line, and a
/// read may end anywhere, inside an event or between two. Blank lines are skipped; a line longer
/// than `maxLine` is an error (the server's own object limit is 1.5 MiB), so a stream that never
/// sends a newline cannot grow the router without end.
struct WatchLines {
    let maxLine: Int
    private var pending: [UInt8] = []

    init(maxLine: Int) { self.maxLine = maxLine }

    struct TooLong: Error, CustomStringConvertible {
        let limit: Int
        var description: String { "a watch event larger than \(limit) bytes" }
    }

    /// The complete lines `bytes` finish, in order.
    mutating func feed(_ bytes: some Sequence<UInt8>) throws(TooLong) -> [[UInt8]] {
        pending.append(contentsOf: bytes)
        var lines: [[UInt8]] = []
        var start = 0
        while let nl = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
            let line = pending[start..<nl]
            if !Self.blank(line) {
                guard line.count <= maxLine else { throw TooLong(limit: maxLine) }
                lines.append(Array(line))
            }
            start = nl + 1
        }
        pending.removeSubrange(..<start)
        guard pending.count <= maxLine else { throw TooLong(limit: maxLine) }
        return lines
    }

    /// What is left when the stream ends: a last event without its newline, if any.
    mutating func finish() -> [UInt8]? {
        defer { pending = [] }
        return Self.blank(pending[...]) ? nil : pending
    }

    private static func blank(_ line: ArraySlice<UInt8>) -> Bool {
        line.allSatisfy { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\t") }
    }
}
