import Foundation
@testable import Node
import Testing

@Suite struct JSONValueTests {
    @Test func rendersWithSortedKeysAndExplicitNulls() {
        let v: JSONValue = ["b": [1, "two", nil, true], "a": ["model_id": nil, "load": -1], "c": .double(0.25)]
        #expect(v.render() == #"{"a":{"load":-1,"model_id":null},"b":[1,"two",null,true],"c":0.25}"#)
        #expect(JSONValue.string("quote \" and \n").render() == #""quote \" and \n""#)
        #expect(JSONValue.string("é\u{01}\\\t😀").render() == #""é\u0001\\\t😀""#)
        #expect(JSONValue.string("plain é 😀").render() == "\"plain é 😀\"")
    }

    @Test func parsesWhatItRenders() {
        let text = #"{"data":[{"id":"m1","created":0}],"labels":{"zone":"a"},"ok":false,"ratio":1.5,"none":null}"#
        let v = JSONValue.parse(Array(text.utf8))
        #expect(v?["data"]?.array?.first?["id"]?.string == "m1")
        #expect(v?["labels"]?.stringMap == ["zone": "a"])
        #expect(v?["ok"] == .bool(false) && v?["ratio"] == .double(1.5) && v?["none"] == .null)
        #expect(v.map { JSONValue.parse(Array($0.render().utf8)) } == v)
    }

    @Test func refusesWhatIsNotJSON() {
        #expect(JSONValue.parse(Array("{\"a\":".utf8)) == nil)
        #expect(JSONValue.parse(Array("".utf8)) == nil)
        #expect(JSONValue.parse(Array(#"{"labels":{"zone":1}}"#.utf8))?["labels"]?.stringMap == nil)
    }
}

/// The tree parser accepts what JSON is and refuses what it is not: compared with Foundation's
/// JSONSerialization on edge cases, and with the scanner it is built on.
@Suite struct JSONValueParserTests {
    static let cases = [
            #"{}"#, #"[]"#, #" {"a" : [1, -2.5e3, true, false, null, "x"]} "#, #""\u00e9\ud83d\ude00\n\t\"\\\/""#, "0", "-0", "1e5", "1E+2",
            "01", "1.", ".5", "-", "+1", "1e", "{\"a\" 1}", "{a:1}", "[1 2]", "nul", "tru", "\"\\x\"",
            "\"\\ud800\"", "\"\\udc00x\"", "\"a\u{01}\"", "[", "{", "\"abc", "[]]", "{} {}", "NaN", "Infinity", "1e999",
            "\"\\uZZZZ\"", "9223372036854775808", "-9223372036854775809", "[\"\\u0000\"]", "{\"a\":{\"b\":[[],{}]}}",
        ]

    @Test func agreesWithFoundationOnWhatIsJSON() {
        for text in Self.cases {
            let ours = JSONValue.parse(Array(text.utf8))
            let foundation = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
            #expect((ours != nil) == (foundation != nil), "\(text): ours \(String(describing: ours)), Foundation \(String(describing: foundation))")
        }
        #expect(JSONValue.parse(Array(#"{"a":[1,2.5,"é😀"],"b":{"c":null}}"#.utf8)) == ["a": [1, .double(2.5), "é😀"], "b": ["c": nil]])
        #expect(JSONValue.parse(Array(#""\u00e9\ud83d\ude00""#.utf8)) == "é😀")
        #expect(JSONValue.parse(Array("9223372036854775808".utf8)) == .double(9223372036854775808))
        #expect(JSONValue.parse([0x22, 0xFF, 0x22]) == nil, "invalid UTF-8 is refused")
        // Stricter than Foundation, as RFC 8259 is: no trailing commas.
        #expect(JSONValue.parse(Array("[1,]".utf8)) == nil && JSONValue.parse(Array(#"{"a":1,}"#.utf8)) == nil)
    }

    /// One definition of JSON: the tree is built only from what the hot path's scanner accepts,
    /// so an inference body and a Responses body are judged alike (a lone surrogate escape was
    /// refused by one and passed by the other). The one difference is about a value, not syntax:
    /// a number beyond `Double`.
    @Test func theScannerAndTheTreeShareOneDefinitionOfJSON() {
        let more = [#"{"a":"\ud800"}"#, #"{"a":"\ud800\u0041"}"#, #"{"a":"\ud83d\ude00"}"#, #"{"a":"\udc00\ud800"}"#, #"["\uD83D\uDE00"]"#,
                    String(repeating: "[", count: JSONScanner.maxDepth + 1) + String(repeating: "]", count: JSONScanner.maxDepth + 1)]
        for text in Self.cases + more {
            let bytes = Array(text.utf8)
            let scanned = bytes.withUnsafeBytes { b in
                do { try JSONScanner.validate(b); return true } catch { return false }
            }
            let parsed = JSONValue.parse(bytes) != nil
            #expect(scanned == parsed || (scanned && text == "1e999"), "\(text.prefix(40)): scanner \(scanned), tree \(parsed)")
        }
        let loneSurrogate = Array(#"{"model":"m","messages":[{"role":"user","content":"\ud800"}]}"#.utf8)
        let refused = loneSurrogate.withUnsafeBytes { b in
            do { _ = try JSONScanner.scanObject(b); return false } catch { return true }
        }
        #expect(refused, "refused on the hot path too")
    }

    @Test func deepNestingIsRefusedNotACrash() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(JSONValue.parse(Array(deep.utf8)) == nil)
        let ok = String(repeating: "[", count: JSONValue.maxDepth) + String(repeating: "]", count: JSONValue.maxDepth)
        #expect(JSONValue.parse(Array(ok.utf8)) != nil)
    }
}
