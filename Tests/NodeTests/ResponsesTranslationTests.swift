import Foundation
@testable import Node
import Testing

/// The Responses ↔ chat completions translation, without a socket: what a worker is sent, how
/// its answer (whole or streamed) becomes output items, and the stream's event order.
@Suite struct ResponsesTranslationTests {
    private func request(_ json: String) throws(APIError) -> ResponsesRequest {
        try ResponsesRequest.parse(Array(json.utf8), now: Date(timeIntervalSince1970: 1000))
    }

    @Test func historyBecomesChatMessagesWithToolCallsGrouped() throws {
        let r = try request(#"""
        {"instructions":"Be exact.","input":[
          {"role":"developer","content":"Use tools."},
          {"role":"user","content":[{"type":"input_text","text":"Weather in "},{"type":"input_text","text":"Oslo?"}]},
          {"type":"function_call","call_id":"call_1","name":"weather","arguments":"{\"city\":\"Oslo\"}"},
          {"type":"function_call","call_id":"call_2","name":"time","arguments":"{}"},
          {"type":"function_call_output","call_id":"call_1","output":"4 C"},
          {"type":"reasoning","summary":[]},
          {"role":"user","content":[{"type":"input_text","text":"see"},{"type":"input_image","image_url":"https://example.invalid/a.png"}]}
        ]}
        """#)
        let messages = ResponsesTranslation.messages(instructions: r.instructions, items: r.input)
        #expect(messages.count == 6, "system, developer→system, user, one assistant with two calls, tool, user (reasoning not replayed)")
        #expect(messages[0] == ["role": "system", "content": "Be exact."])
        #expect(messages[1]["role"] == "system")
        #expect(messages[2]["content"] == "Weather in Oslo?")
        let calls = messages[3]["tool_calls"]?.array ?? []
        #expect(messages[3]["role"] == "assistant" && calls.count == 2)
        #expect(calls.first?["id"] == "call_1" && calls.first?["function"]?["arguments"] == #"{"city":"Oslo"}"#)
        #expect(messages[4] == ["role": "tool", "tool_call_id": "call_1", "content": "4 C"])
        #expect(messages[5]["content"]?.array?.last == ["type": "image_url", "image_url": ["url": "https://example.invalid/a.png"]])
    }

    @Test func theChatBodyCarriesSamplingAndFunctionTools() throws {
        let r = try request(#"""
        {"model":"m","input":"hi","max_output_tokens":64,"temperature":0.5,"top_p":1,"safety_identifier":"u1","stream":true,
         "tools":[{"type":"function","name":"weather","description":"d","parameters":{"type":"object"},"strict":true}],
         "tool_choice":{"type":"function","name":"weather"},"parallel_tool_calls":false}
        """#)
        let body = ResponsesTranslation.chatBody(r, messages: [])
        #expect(body["model"] == "m" && body["max_tokens"] == 64 && body["temperature"] == .double(0.5) && body["top_p"] == .double(1))
        #expect(body["user"] == "u1" && body["stream"] == true && body["stream_options"] == ["include_usage": true])
        #expect(body["tools"] == [["type": "function", "function": ["name": "weather", "description": "d", "parameters": ["type": "object"], "strict": true]]])
        #expect(body["tool_choice"] == ["type": "function", "function": ["name": "weather"]])
        #expect(body["parallel_tool_calls"] == false)
    }

    @Test func aCompletionWithToolCallsBecomesFunctionCallItems() throws {
        let completion = JSONValue.parse(Array(#"""
        {"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[
          {"id":"call_9","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Oslo\"}"}}]},"finish_reason":"tool_calls"}],
         "usage":{"prompt_tokens":10,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4}}}
        """#.utf8))!
        let result = try #require(ResponsesTranslation.result(ofCompletion: completion))
        #expect(result.messageID == nil && result.toolCalls.count == 1 && result.toolCalls[0].callID == "call_9")
        let response = ResponsesTranslation.response(id: "resp_1", createdAt: Date(timeIntervalSince1970: 1000), request: try request(#"{"input":"x"}"#), result: result)
        let item = response["output"]?.array?.first
        #expect(item?["type"] == "function_call" && item?["name"] == "weather" && item?["call_id"] == "call_9" && item?["status"] == "completed")
        #expect(response["status"] == "completed" && response["usage"]?["total_tokens"] == 15 && response["usage"]?["input_tokens_details"]?["cached_tokens"] == 4)
        // The function call, replayed next turn with its output, is what the worker needs to see.
        let replay = try ConversationItem.parse(item!, now: Date())
        let messages = ResponsesTranslation.messages(instructions: nil, items: [replay])
        #expect(messages.first?["tool_calls"]?.array?.first?["id"] == "call_9")
        #expect(ResponsesTranslation.result(ofCompletion: ["object": "error"]) == nil)
    }

    @Test func aStreamSplitAnywhereGivesTheSameEventsInOrder() throws {
        let r = try request(#"{"input":"x","stream":true}"#)
        let sse = [
            #"data: {"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#,
            #"data: {"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
            #"data: {"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":"{\"a\""}}]},"finish_reason":null}]}"#,
            #"data: {"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":"tool_calls"}]}"#,
            #"data: {"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            "data: [DONE]",
        ].joined(separator: "\r\n\r\n") + "\r\n\r\n"
        func run(splitEvery n: Int) -> (String, ChatResult, Bool) {
            var s = ResponsesStream(responseID: "resp_1", createdAt: Date(timeIntervalSince1970: 1000), request: r)
            var out = s.start()
            let bytes = Array(sse.utf8)
            var i = 0
            while i < bytes.count {
                out += s.feed(bytes[i..<min(i + n, bytes.count)])
                i += n
            }
            out += s.finishItems()
            return (out, s.result, s.sawDone)
        }
        let (whole, result, done) = run(splitEvery: 1 << 20)
        #expect(done && result.text == "Hello" && result.toolCalls.first?.arguments == #"{"a":1}"# && result.outputTokens == 4)
        let types = whole.split(separator: "\n").filter { $0.hasPrefix("event: ") }.map { String($0.dropFirst(7)) }
        #expect(types == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
                          "response.output_text.delta", "response.output_text.delta", "response.output_item.added",
                          "response.function_call_arguments.delta", "response.function_call_arguments.delta",
                          "response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.function_call_arguments.done", "response.output_item.done"])
        for n in [1, 7, 64] {
            let (split, splitResult, _) = run(splitEvery: n)
            // Ids are random per run; compare the events without them.
            func shape(_ text: String) -> [String] { text.split(separator: "\n").filter { $0.hasPrefix("event: ") }.map(String.init) }
            #expect(shape(split) == shape(whole) && splitResult.text == result.text && splitResult.toolCalls.map(\.arguments) == result.toolCalls.map(\.arguments))
        }
    }

    /// A worker's endless line, or an answer past the whole-answer bound, stops the translation
    /// with a reason; the line is looked at once, not rescanned per read (an endless line fed
    /// in 4 KiB reads used to cost time quadratic in its length).
    @Test func aStreamOutOfBoundsStopsWithAReason() throws {
        let r = try request(#"{"input":"x","stream":true}"#)
        var endless = ResponsesStream(responseID: "resp_1", createdAt: Date(), request: r)
        let piece = [UInt8](repeating: UInt8(ascii: "a"), count: 4096)
        var fed = 0
        let clock = ContinuousClock()
        let took = clock.measure {
            while endless.failure == nil, fed < 8 * ResponsesStream.maxEventBytes {
                _ = endless.feed(piece)
                fed += piece.count
            }
        }
        #expect(endless.failure?.contains("event of more than") == true && fed <= ResponsesStream.maxEventBytes + piece.count)
        #expect(took < .seconds(2), "one pass over the line: \(took)")
        #expect(endless.feed(Array("\n".utf8)) == "", "nothing more after a failure")

        var big = ResponsesStream(responseID: "resp_2", createdAt: Date(), request: r)
        let text = String(repeating: "b", count: 512 << 10)
        let event = Array("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\(text)\"}}]}\n\n".utf8)
        var events = 0
        while big.failure == nil, events < 200 {
            _ = big.feed(event)
            events += 1
        }
        #expect(big.failure?.contains("exceeds") == true && big.result.byteCount > ResponsesClient.maxCompletionBytes)
        #expect(events == ResponsesClient.maxCompletionBytes / (512 << 10) + 1, "stopped at the first event past the bound")
    }

    @Test func badRequestsNameTheField() {
        for (json, code) in [(#"{"input":"x","max_output_tokens":0}"#, "invalid_max_output_tokens"),
                             (#"{"input":"x","max_output_tokens":2.5}"#, "invalid_max_output_tokens"),
                             (#"{"input":"x","top_p":2}"#, "invalid_top_p"), (#"{"input":"x","store":"yes"}"#, "invalid_store"),
                             (#"{"input":"x","previous_response_id":"bad id"}"#, "invalid_previous_response_id"),
                             (#"{"input":"x","conversation":{"nope":1}}"#, "invalid_conversation"),
                             (#"{"input":"x","tools":[{"type":"function"}]}"#, "invalid_tools")] {
            #expect(throws: APIError.self, "\(json)") { try request(json) }
            do { _ = try request(json) } catch { #expect(error.code.rawValue == code, "\(json)") }
        }
    }
}
