import NIOCore
@testable import Node
import Testing

/// The merge of a prefill's prompt logprobs into a decode answer, whole or streamed in pieces
/// cut anywhere.
@Suite struct PDLogprobsTests {
    let prefillAnswer = Array(#"{"text":"","meta_info":{"input_token_logprobs":[[-0.1,1,null],[-0.2,2,null]],"output_token_logprobs":[]}}"#.utf8)

    @Test func theListsComeFromAWholeAnswerAStreamOrABatch() {
        #expect(PDLogprobs.inputLogprobs(fromPrefillAnswer: prefillAnswer).map(\.count) == [2])
        let stream = Array(("data: " + String(decoding: prefillAnswer, as: UTF8.self) + "\n\ndata: [DONE]\n\n").utf8)
        #expect(PDLogprobs.inputLogprobs(fromPrefillAnswer: stream).map(\.count) == [2])
        let batch = Array(#"[{"meta_info":{"input_token_logprobs":[[-1,1,null]]}},{"meta_info":{"input_token_logprobs":[]}}]"#.utf8)
        #expect(PDLogprobs.inputLogprobs(fromPrefillAnswer: batch).map(\.count) == [1, 0])
        #expect(PDLogprobs.inputLogprobs(fromPrefillAnswer: Array("not json".utf8)).isEmpty)
    }

    @Test func aWholeAnswerIsMergedAtTheEnd() throws {
        var m = PDLogprobs(stream: false)
        let decode = #"{"text":"hi","meta_info":{"input_token_logprobs":[[-0.3,3,null]],"id":"x"}}"#
        #expect(m.decodePart(ByteBuffer(string: String(decode.prefix(10)))) == [])
        #expect(m.decodePart(ByteBuffer(string: String(decode.dropFirst(10)))) == [])
        _ = m.prefillAnswered(PDLogprobs.inputLogprobs(fromPrefillAnswer: prefillAnswer))
        let merged = try #require(JSONValue.parse(m.decodeEnded()))
        #expect(merged["meta_info"]?["input_token_logprobs"]?.array?.count == 3, "prefill's two, then the decode's own")
        #expect(merged["meta_info"]?["input_token_logprobs"]?.array?.first == .array([.double(-0.1), .int(1), .null]))
        #expect(merged["text"] == .string("hi"))
    }

    @Test func streamEventsAreHeldUntilThePrefillAnswersAndMergedWhateverTheCuts() throws {
        let event = #"data: {"text":"a","meta_info":{"input_token_logprobs":[]}}"# + "\n\n"
        let body = event + event + "data: [DONE]\n\n"
        for cut in stride(from: 1, to: body.utf8.count, by: 7) {
            var m = PDLogprobs(stream: true)
            var out: [UInt8] = []
            out += m.decodePart(ByteBuffer(string: String(decoding: Array(body.utf8)[..<cut], as: UTF8.self)))!
            #expect(out.isEmpty, "held until the prefill answers")
            out += m.prefillAnswered(PDLogprobs.inputLogprobs(fromPrefillAnswer: prefillAnswer))
            out += m.decodePart(ByteBuffer(string: String(decoding: Array(body.utf8)[cut...], as: UTF8.self)))!
            out += m.decodeEnded()
            let text = String(decoding: out, as: UTF8.self)
            let events = text.components(separatedBy: "\n\n").filter { !$0.isEmpty }
            #expect(events.count == 3 && events.last == "data: [DONE]", "cut at \(cut): \(text)")
            for e in events.dropLast() {
                #expect(JSONValue.parse(e.dropFirst(6).utf8)?["meta_info"]?["input_token_logprobs"]?.array?.count == 2, "cut at \(cut): \(e)")
            }
        }
    }

    @Test func aStreamFedByteByByteIsMergedAndAnOversizedAnswerIsRefused() throws {
        let event = #"data: {"text":"a","meta_info":{"input_token_logprobs":[]}}"# + "\n\n"
        var m = PDLogprobs(stream: true)
        _ = m.prefillAnswered(PDLogprobs.inputLogprobs(fromPrefillAnswer: prefillAnswer))
        var out: [UInt8] = []
        for b in Array((event + event + "data: [DONE]\n\n").utf8) {
            let ready = m.decodePart(ByteBuffer(bytes: [b]))
            out += try #require(ready)
        }
        out += m.decodeEnded()
        let events = String(decoding: out, as: UTF8.self).components(separatedBy: "\n\n").filter { !$0.isEmpty }
        #expect(events.count == 3 && events.dropLast().allSatisfy { JSONValue.parse($0.dropFirst(6).utf8)?["meta_info"]?["input_token_logprobs"]?.array?.count == 2 })
        // An event that never ends, or a whole answer past the bound: refused, not held.
        for stream in [true, false] {
            var held = PDLogprobs(stream: stream)
            _ = held.prefillAnswered(PDLogprobs.inputLogprobs(fromPrefillAnswer: prefillAnswer))
            let piece = ByteBuffer(repeating: UInt8(ascii: "a"), count: 1 << 20)
            var parts = 0
            while held.decodePart(piece) != nil, parts < 100 { parts += 1 }
            #expect(parts == PDLogprobs.maxHeldBytes >> 20, "stream \(stream): refused once past the bound")
        }
    }

    @Test func aPrefillWithoutLogprobsLeavesTheAnswerAsItIs() {
        var m = PDLogprobs(stream: false)
        let decode = #"{"text":"hi","meta_info":{"id":"x"}}"#
        _ = m.decodePart(ByteBuffer(string: decode))
        _ = m.prefillAnswered([])
        #expect(String(decoding: m.decodeEnded(), as: UTF8.self) == decode)
    }
}
