@testable import Node
import Testing

/// The bytes cache-aware routing keys on, read from validated request bodies by the same walker
/// that validated them.
@Suite struct RoutingTextTests {
    private func text(_ kind: Route.Inference, _ json: String) throws -> [UInt8] {
        let bytes = Array(json.utf8)
        return try bytes.withUnsafeBytes { b in
            let members = try JSONScanner.scanObject(b)
            return RoutingText.extract(kind, members: members, bytes: b)
        }
    }

    @Test func chatMessagesInOrderWithContentParts() throws {
        let body = #"{"model":"m", "messages" : [ {"role":"system","content":"be brief"} ,{"role":"user","content":[{"type":"text","text":"a \"quoted\" line"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":" and more"}]}, 7, {"content": {"text": "obj"}}]}"#
        #expect(String(decoding: try text(.chat, body), as: UTF8.self) == #"be briefa "quoted" line and moreobj"#)
    }

    @Test func otherKindsReadTheirField() throws {
        #expect(try text(.completions, #"{"prompt":"once upon"}"#) == Array("once upon".utf8))
        #expect(try text(.generate, #"{"input_ids":[1, 258]}"#) == [1, 0, 0, 0, 2, 1, 0, 0])
        #expect(try text(.embeddings, #"{"input":["x","y"]}"#) == Array("xy".utf8))
        #expect(try text(.rerank, #"{"query":"q","documents":["d"]}"#) == Array("q".utf8))
        #expect(try text(.chat, #"{"messages":[]}"#).isEmpty)
        #expect(try text(.chat, #"{"messages":{}}"#).isEmpty)
    }
}
