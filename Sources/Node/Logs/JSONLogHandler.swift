import Foundation
import Logging
import Primitives

/// `--log-json`: one JSON object per line, for log collectors. The keys are the reference
/// gateway's: `timestamp` (RFC 3339, UTC, milliseconds), `level` (upper case), `message`, the
/// event's metadata as top-level keys, `target` (the logger's label), `filename` and
/// `line_number`. A metadata key that would overwrite one of those is written as `field.<key>`.
struct JSONLogHandler: LogHandler {
    let label: String
    var stream: any TextOutputStream & Sendable
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String, stream: any TextOutputStream & Sendable) {
        self.label = label
        self.stream = stream
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    static let reservedKeys: Set<String> = ["timestamp", "level", "message", "target", "filename", "line_number"]

    func log(event: LogEvent) {
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { $1 } }
        if let explicit = event.metadata { fields.merge(explicit) { $1 } }
        if let error = event.error { fields["error"] = "\(error)" }
        var line = #"{"timestamp":"\#(Self.timestamp(Date()))","level":"\#(event.level.rawValue.uppercased())","message":\#(JSONString.quote(event.message.description))"#
        for key in fields.keys.sorted() {
            let name = Self.reservedKeys.contains(key) ? "field." + key : key
            line += "," + JSONString.quote(name) + ":" + Self.render(fields[key]!)
        }
        line += #","target":\#(JSONString.quote(label)),"filename":\#(JSONString.quote(event.file)),"line_number":\#(event.line)}"# + "\n"
        var out = stream
        out.write(line)
    }

    static func render(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let s): JSONString.quote(s)
        case .stringConvertible(let c): JSONString.quote(c.description)
        case .array(let a): "[" + a.map(render).joined(separator: ",") + "]"
        case .dictionary(let d): "{" + d.keys.sorted().map { JSONString.quote($0) + ":" + render(d[$0]!) }.joined(separator: ",") + "}"
        }
    }

    /// "2026-12-02T01:24:04.123Z".
    static func timestamp(_ date: Date) -> String {
        let ms = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        var seconds = time_t(ms / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(ms % 1000))
    }
}

/// Standard error as a `TextOutputStream`: one `write` per line, so lines of several threads
/// never interleave.
struct StandardErrorStream: TextOutputStream, Sendable {
    mutating func write(_ string: String) { FileHandle.standardError.write(Data(string.utf8)) }
}
