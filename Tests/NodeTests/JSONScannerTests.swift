@testable import Node
import Testing

@Suite struct JSONScannerTests {
    func scan(_ s: String) throws(JSONScanner.Failure) -> [String: String] {
        var bytes = Array(s.utf8)
        return try scan(&bytes)
    }

    func scan(_ bytes: inout [UInt8]) throws(JSONScanner.Failure) -> [String: String] {
        let result = bytes.withUnsafeBytes { raw -> Result<[String: String], JSONScanner.Failure> in
            do throws(JSONScanner.Failure) {
                var out: [String: String] = [:]
                for m in try JSONScanner.scanObject(raw) {
                    let key = String(decoding: raw[m.key], as: UTF8.self)
                    out[key] = m.stringValue(in: raw) ?? String(decoding: raw[m.value], as: UTF8.self)
                }
                return .success(out)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    @Test func readsTopLevelMembers() throws {
        let m = try scan(#" { "model" : "llama", "stream": true, "n": -1.5e3, "messages": [{"role":"user","content":"a\"b"}], "x": null } "#)
        #expect(m["model"] == "llama")
        #expect(m["stream"] == "true")
        #expect(m["n"] == "-1.5e3")
        #expect(m["x"] == "null")
        #expect(m["messages"]?.hasPrefix("[{") == true)
        #expect(m.count == 5, "nested keys are not top-level members")
    }

    @Test func decodesEscapes() throws {
        let m = try scan(#"{"s":"tab\there \u00e9 \ud83d\ude00 \/ \\"}"#)
        #expect(m["s"] == "tab\there é 😀 / \\")
    }

    @Test func acceptsValidDocuments() throws {
        for ok in ["{}", #"{"a":[]}"#, #"{"a":[1,2,{"b":[true,false,null]}]}"#, #"{"a":0}"#, #"{"a":0.5}"#, #"{"a":1E+2}"#, "{\"é\":\"ü😀\"}", "{\"a\":\"\u{7f}\"}"] {
            #expect(throws: Never.self, "\(ok)") { _ = try scan(ok) }
        }
    }

    @Test func refusesMalformedDocuments() {
        for bad in ["", " ", "[]", "1", "{", "}", #"{"a"}"#, #"{"a":}"#, #"{"a":1,}"#, #"{"a":01}"#, #"{"a":1.}"#, #"{"a":-}"#, #"{"a":.5}"#,
                    #"{"a":tru}"#, #"{"a":"x}"#, #"{"a":"\x"}"#, #"{"a":"\u12G4"}"#, "{\"a\":\"\n\"}", #"{a:1}"#, #"{"a":1}{"#, #"{"a":[1 2]}"#, #"{"a":1e}"#] {
            #expect(throws: JSONScanner.Failure.self, "\(bad.debugDescription)") { _ = try scan(bad) }
        }
    }

    @Test func refusesInvalidUTF8() {
        for seq: [UInt8] in [[0xC3, 0x28], [0x80], [0xC0, 0xAF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xFF], [0xE2, 0x82]] {
            var bytes = Array(#"{"a":""#.utf8) + seq + Array(#""}"#.utf8)
            #expect(throws: JSONScanner.Failure.self, "\(seq)") { _ = try scan(&bytes) }
        }
    }

    @Test func deepNestingIsRefusedNotRecursed() {
        let deep = "{\"a\":" + String(repeating: "[", count: 1_000_000) + String(repeating: "]", count: 1_000_000) + "}"
        #expect(throws: JSONScanner.Failure.self) { _ = try scan(deep) }
        let fine = "{\"a\":" + String(repeating: "[", count: 200) + String(repeating: "]", count: 200) + "}"
        #expect(throws: Never.self) { _ = try scan(fine) }
    }

    @Test func truncatedInputAtEveryLengthNeverCrashes() {
        let doc = #"{"model":"m","messages":[{"role":"user","content":"h\u00e9llo \"x\""}],"stream":false,"n":-12.5e-3}"#
        let bytes = Array(doc.utf8)
        for cut in 0..<bytes.count {
            var prefix = Array(bytes[..<cut])
            #expect(throws: JSONScanner.Failure.self) { _ = try scan(&prefix) }
        }
    }
}
