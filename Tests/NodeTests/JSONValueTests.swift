@testable import Node
import Testing

@Suite struct JSONValueTests {
    @Test func rendersWithSortedKeysAndExplicitNulls() {
        let v: JSONValue = ["b": [1, "two", nil, true], "a": ["model_id": nil, "load": -1], "c": .double(0.25)]
        #expect(v.render() == #"{"a":{"load":-1,"model_id":null},"b":[1,"two",null,true],"c":0.25}"#)
        #expect(JSONValue.string("quote \" and \n").render() == #""quote \" and \n""#)
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
