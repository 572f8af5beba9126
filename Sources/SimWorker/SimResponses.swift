import Primitives
import Foundation

/// What a simulated inference request asked for, read from its JSON body.
struct SimRequest {
    enum Kind: String { case chat, completion, generate, embeddings, rerank, classify }
    let kind: Kind
    let prompt: [UInt8]
    let outputTokens: Int
    let stream: Bool
    let includeUsage: Bool
    let model: String?
    let inputCount: Int
    /// The request set a token limit: the answer stops at it (`length`); otherwise the
    /// simulated answer is complete at its default length (`stop`).
    let limited: Bool
    /// `/generate` with `return_logprob`: `meta_info` carries `input_token_logprobs` (one per
    /// prompt token, `SimResponses.promptLogprob`) and `output_token_logprobs`.
    let returnLogprob: Bool
    /// A decode worker in PD computes no prompt logprobs (its prefill did): its list is empty.
    var promptLogprobs = true

    init(kind: Kind, json: [String: Any], maxOutputTokens: Int, defaultOutputTokens: Int) {
        self.kind = kind
        self.returnLogprob = kind == .generate && (json["return_logprob"] as? Bool) == true
        self.model = json["model"] as? String
        self.stream = (json["stream"] as? Bool) ?? false
        self.includeUsage = ((json["stream_options"] as? [String: Any])?["include_usage"] as? Bool) ?? false
        var text = ""
        var inputs = 1
        switch kind {
        case .chat:
            for case let message as [String: Any] in (json["messages"] as? [Any]) ?? [] {
                text += Self.text(of: message["content"])
            }
        case .completion: text = Self.text(of: json["prompt"])
        case .generate:
            if let t = json["text"] { text = Self.text(of: t) }
            else if let ids = json["input_ids"] as? [Any] { text = ids.map { "\($0) " }.joined() }
        case .embeddings, .classify:
            let input = json["input"] ?? json["text"]
            if let list = input as? [Any] { inputs = max(1, list.count) }
            text = Self.text(of: input)
        case .rerank:
            text = Self.text(of: json["query"])
            inputs = ((json["documents"] as? [Any])?.count) ?? 0
        }
        self.prompt = Array(text.utf8)
        self.inputCount = inputs
        let sampling = json["sampling_params"] as? [String: Any]
        let limit = (json["max_tokens"] as? Int) ?? (json["max_completion_tokens"] as? Int) ?? (sampling?["max_new_tokens"] as? Int)
        let asked = limit ?? defaultOutputTokens
        self.outputTokens = max(0, min(asked, maxOutputTokens))
        self.limited = limit != nil || asked > maxOutputTokens
    }

    var finishReason: String { limited ? "length" : "stop" }

    /// The text of a prompt-like field: a string, a list of strings, or OpenAI content parts.
    static func text(of value: Any?) -> String {
        switch value {
        case let s as String: return s
        case let list as [Any]:
            return list.map { item -> String in
                if let s = item as? String { return s }
                if let part = item as? [String: Any], let t = part["text"] as? String { return t }
                return ""
            }.joined()
        default: return ""
        }
    }
}

/// JSON bodies in SGLang's and OpenAI's shapes. Built as strings: the shapes are fixed and
/// this keeps the simulator cheap next to the router it is measured against.
enum SimResponses {
    static let words = [" the", " model", " says", " hello", " from", " a", " simulated", " worker"]

    static func token(_ i: Int) -> String { words[i % words.count] }

    static func quote(_ s: String) -> String { JSONString.quote(s) }

    static func usage(prompt: Int, completion: Int, cached: Int) -> String {
        #"{"prompt_tokens":\#(prompt),"completion_tokens":\#(completion),"total_tokens":\#(prompt + completion),"prompt_tokens_details":{"cached_tokens":\#(cached)}}"#
    }

    static func metaInfo(_ r: SimRequest, id: String, completion: Int, cached: Int, finished: Bool) -> String {
        let finish = finished ? #"{"type":"length","length":\#(completion)}"# : "null"
        var logprobs = ""
        if r.returnLogprob {
            let input = r.promptLogprobs ? r.prompt.map { "[\(promptLogprob($0)),\($0),null]" }.joined(separator: ",") : ""
            let output = (0..<completion).map { "[-0.25,\($0),null]" }.joined(separator: ",")
            logprobs = #","input_token_logprobs":[\#(input)],"output_token_logprobs":[\#(output)]"#
        }
        return #"{"id":"\#(id)","prompt_tokens":\#(r.prompt.count),"completion_tokens":\#(completion),"cached_tokens":\#(cached),"finish_reason":\#(finish)\#(logprobs)}"#
    }

    /// The simulated logprob of a prompt token (a character): fixed, so tests can predict it.
    static func promptLogprob(_ c: UInt8) -> Double { -Double(c % 10 + 1) / 10 }

    static func complete(_ r: SimRequest, id: String, model: String, cached: Int, created: Int) -> String {
        let text = (0..<r.outputTokens).map(token).joined()
        let u = usage(prompt: r.prompt.count, completion: r.outputTokens, cached: cached)
        switch r.kind {
        case .chat:
            return #"{"id":"\#(id)","object":"chat.completion","created":\#(created),"model":\#(quote(model)),"choices":[{"index":0,"message":{"role":"assistant","content":\#(quote(text))},"finish_reason":"\#(r.finishReason)"}],"usage":\#(u)}"#
        case .completion:
            return #"{"id":"\#(id)","object":"text_completion","created":\#(created),"model":\#(quote(model)),"choices":[{"index":0,"text":\#(quote(text)),"logprobs":null,"finish_reason":"\#(r.finishReason)"}],"usage":\#(u)}"#
        case .generate:
            return #"{"text":\#(quote(text)),"meta_info":\#(metaInfo(r, id: id, completion: r.outputTokens, cached: cached, finished: true))}"#
        case .embeddings:
            let rows = (0..<r.inputCount).map { i in
                #"{"object":"embedding","index":\#(i),"embedding":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8]}"#
            }.joined(separator: ",")
            return #"{"object":"list","data":[\#(rows)],"model":\#(quote(model)),"usage":{"prompt_tokens":\#(r.prompt.count),"total_tokens":\#(r.prompt.count)}}"#
        case .rerank:
            let rows = (0..<r.inputCount).map { i in
                #"{"index":\#(i),"score":\#(1.0 / Double(i + 1)),"meta_info":{"id":"\#(id)-\#(i)"}}"#
            }.joined(separator: ",")
            return "[\(rows)]"
        case .classify:
            let rows = (0..<r.inputCount).map { i in
                #"{"index":\#(i),"label":"LABEL_0","probs":[0.9,0.1],"num_classes":2}"#
            }.joined(separator: ",")
            return #"{"id":"\#(id)","object":"list","created":\#(created),"model":\#(quote(model)),"data":[\#(rows)],"usage":{"prompt_tokens":\#(r.prompt.count),"total_tokens":\#(r.prompt.count)}}"#
        }
    }

    /// One SSE event for token `i` of a stream (OpenAI chunk or SGLang cumulative text).
    static func streamEvent(_ r: SimRequest, id: String, model: String, index i: Int, cached: Int, created: Int) -> String {
        switch r.kind {
        case .chat:
            let role = i == 0 ? #""role":"assistant","# : ""
            return #"data: {"id":"\#(id)","object":"chat.completion.chunk","created":\#(created),"model":\#(quote(model)),"choices":[{"index":0,"delta":{\#(role)"content":\#(quote(token(i)))},"finish_reason":null}]}"# + "\n\n"
        case .completion:
            return #"data: {"id":"\#(id)","object":"text_completion","created":\#(created),"model":\#(quote(model)),"choices":[{"index":0,"text":\#(quote(token(i))),"logprobs":null,"finish_reason":null}]}"# + "\n\n"
        default:
            let text = (0...i).map(token).joined()
            let meta = metaInfo(r, id: id, completion: i + 1, cached: cached, finished: i + 1 == r.outputTokens)
            return #"data: {"text":\#(quote(text)),"meta_info":\#(meta)}"# + "\n\n"
        }
    }

    /// The closing events of a stream: a finish chunk (and usage when asked) then `[DONE]`.
    static func streamEnd(_ r: SimRequest, id: String, model: String, cached: Int, created: Int) -> String {
        var out = ""
        switch r.kind {
        case .chat:
            out += #"data: {"id":"\#(id)","object":"chat.completion.chunk","created":\#(created),"model":\#(quote(model)),"choices":[{"index":0,"delta":{},"finish_reason":"\#(r.finishReason)"}]}"# + "\n\n"
        case .completion:
            out += #"data: {"id":"\#(id)","object":"text_completion","created":\#(created),"model":\#(quote(model)),"choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"\#(r.finishReason)"}]}"# + "\n\n"
        default: break
        }
        if r.includeUsage, r.kind == .chat || r.kind == .completion {
            out += #"data: {"id":"\#(id)","object":"chat.completion.chunk","created":\#(created),"model":\#(quote(model)),"choices":[],"usage":\#(usage(prompt: r.prompt.count, completion: r.outputTokens, cached: cached))}"# + "\n\n"
        }
        return out + "data: [DONE]\n\n"
    }

    /// `GET /v1/loads` as SGLang answers it: one record per data-parallel rank (requests in
    /// flight and the reported queue spread over the ranks, the reported KV usage on each) and
    /// their aggregate.
    static func loads(running: Int, engine: SimWorkerState.EngineReport, options: SimWorkerOptions) -> String {
        // An absurd --dp-size (a test of the router's bounds) lists a bounded number of ranks:
        // more than a router accepts, never enough to stall this worker.
        let ranks = min(max(1, options.dpSize), 2_048)
        func share(_ total: Int, _ rank: Int) -> Int { total / ranks + (rank < total % ranks ? 1 : 0) }
        let capacity = options.cacheCapacityBlocks * options.cacheBlockSize
        let used = Int(Double(capacity) * engine.tokenUsage)
        let records = (0..<ranks).map { r in
            let (run, wait) = (share(running, r), share(engine.waiting, r))
            return #"{"dp_rank":\#(r),"num_running_reqs":\#(run),"num_waiting_reqs":\#(wait),"num_total_reqs":\#(run + wait),"num_used_tokens":\#(used),"num_total_tokens":\#(capacity),"token_usage":\#(engine.tokenUsage),"gen_throughput":\#(options.tokensPerSecond),"utilization":\#(run > 0 ? 1.0 : 0.0)}"#
        }
        let aggregate = #"{"total_running_reqs":\#(running),"total_waiting_reqs":\#(engine.waiting),"total_reqs":\#(running + engine.waiting),"total_used_tokens":\#(used * ranks),"total_tokens":\#(capacity * ranks),"avg_token_usage":\#(engine.tokenUsage),"avg_throughput":\#(options.tokensPerSecond),"avg_utilization":\#(running > 0 ? 1.0 : 0.0)}"#
        return #"{"timestamp":"1970-01-01T00:00:00+00:00","version":"sim","dp_rank_count":\#(ranks),"loads":[\#(records.joined(separator: ","))],"aggregate":\#(aggregate)}"#
    }

    static func error(_ message: String, status: Int) -> String {
        #"{"object":"error","message":\#(quote(message)),"type":"\#(status == 400 ? "BadRequestError" : "InternalServerError")","param":null,"code":\#(status)}"#
    }
}
