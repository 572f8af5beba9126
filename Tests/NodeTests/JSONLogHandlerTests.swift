import Foundation
import Logging
@testable import Node
import Synchronization
import Testing

/// `--log-json`'s lines: one parseable object each, whatever the message and metadata hold.
@Suite struct JSONLogHandlerTests {
    final class Captured: Sendable {
        let lines = Mutex<[String]>([])
    }

    struct CapturingStream: TextOutputStream, Sendable {
        let into: Captured
        mutating func write(_ string: String) { into.lines.withLock { $0.append(string) } }
    }

    @Test func everyLineIsOneObjectWithTheFixedKeysAndTheMetadataBesideThem() throws {
        let captured = Captured()
        var logger = Logger(label: "smg") { label in JSONLogHandler(label: label, stream: CapturingStream(into: captured)) }
        logger.logLevel = .debug
        logger[metadataKey: "router"] = "a"
        logger.debug("a \"quoted\"\nmessage", metadata: [
            "message": "not the message", "list": ["x", "y"], "nested": ["k": "v"], "count": "\(3)",
        ])
        logger.trace("below the level")
        let lines = captured.lines.withLock { $0 }
        #expect(lines.count == 1 && lines[0].hasSuffix("}\n") && !lines[0].dropLast().contains("\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        #expect(object["message"] as? String == "a \"quoted\"\nmessage")
        #expect(object["field.message"] as? String == "not the message", "a metadata key never overwrites a fixed one")
        #expect(object["level"] as? String == "DEBUG" && object["target"] as? String == "smg" && object["router"] as? String == "a")
        #expect(object["list"] as? [String] == ["x", "y"] && (object["nested"] as? [String: String]) == ["k": "v"] && object["count"] as? String == "3")
        #expect((object["filename"] as? String)?.hasSuffix("JSONLogHandlerTests.swift") == true && object["line_number"] is Int)
        let stamp = try #require(object["timestamp"] as? String)
        #expect(stamp.range(of: #"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"#, options: .regularExpression) != nil, "\(stamp)")
    }

    @Test func aDayIsTheUTCDate() {
        #expect(DailyLogFile.day(of: Date(timeIntervalSince1970: 0)) == "1970-01-01")
        #expect(DailyLogFile.day(of: Date(timeIntervalSince1970: 1_796_083_199)) == "2026-11-30")
        #expect(DailyLogFile.day(of: Date(timeIntervalSince1970: 1_796_083_200)) == "2026-12-01")
        #expect(JSONLogHandler.timestamp(Date(timeIntervalSince1970: 1_796_083_200.25)) == "2026-12-01T00:00:00.250Z")
    }
}
