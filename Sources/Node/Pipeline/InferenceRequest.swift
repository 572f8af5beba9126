import NIOCore
import NIOHTTP1
import Policies

/// Turns a complete inference request into the plan the pipeline runs: the body is validated
/// as JSON in one pass that also reads the fields routing needs (`model`, `stream`, and the
/// routing text when the policy reads prompts). The caller was authenticated from the head.
enum InferenceRequest {
    /// The fields routing reads. One of them twice (`{"model":"a","model":"b"}`) is refused:
    /// JSON parsers disagree on which one counts, so the router could route on one value while
    /// the worker serves the other. `model` and `stream` first: their index is used below.
    static let routingFields: [StaticString] = ["model", "stream", "text", "messages", "prompt", "input_ids"]

    /// `tenant`: the caller's (`Tenancy`), which scopes its routing key.
    static func plan(_ kind: Route.Inference, head: HTTPRequestHead, body: ByteBuffer, requestID: String, tenant: String? = nil,
                     state: RouterState) throws(APIError) -> ExchangePlan {
        var model: String?
        var stream = false
        var routingText: [UInt8] = []
        let wantsText = state.policyUsesText
        var duplicate: StaticString?
        let pd = state.config.pd != nil, dpAware = state.config.dpAware
        if pd, ![.generate, .chat, .completions, .rerank].contains(kind) {
            throw APIError(.notSupportedInPDMode, "/\(kind.endpoint) is not served in PD disaggregation mode: generate, chat completions, completions and rerank are")
        }
        var batchSize: Int?
        var oversized: Batch.TooLarge?
        let maxBatch = state.config.maxBatchSize
        var emptyObject = false
        var ownedField: StaticString?
        var returnLogprob = false
        let failure: JSONScanner.Failure? = body.withUnsafeReadableBytes { bytes -> JSONScanner.Failure? in
            do throws(JSONScanner.Failure) {
                let members = try JSONScanner.scanObject(bytes)
                emptyObject = members.isEmpty
                if dpAware { ownedField = Self.rankFields.first { name in members.contains { $0.keyEquals(name, in: bytes) } } }
                switch Batch.measure(kind, members: members, bytes: bytes, limit: maxBatch) {
                case .size(let n): batchSize = n
                case .tooLarge(let what): oversized = what
                }
                if pd {
                    ownedField = BootstrapFields.names.first { name in members.contains { $0.keyEquals(name, in: bytes) } } ?? ownedField
                    returnLogprob = kind == .generate && members.contains { $0.keyEquals("return_logprob", in: bytes) && $0.boolValue(in: bytes) == true }
                }
                var seen: UInt8 = 0
                for m in members {
                    for (i, name) in routingFields.enumerated() where m.keyEquals(name, in: bytes) {
                        if seen & (1 << i) != 0 { duplicate = name }
                        seen |= 1 << i
                        if i == 0 { model = m.stringValue(in: bytes) } else if i == 1 { stream = m.boolValue(in: bytes) ?? false }
                    }
                }
                if wantsText, duplicate == nil { routingText = RoutingText.extract(kind, members: members, bytes: bytes) }
                return nil
            } catch let failure {
                return failure
            }
        }
        if let failure { throw .invalidJSON(failure.description) }
        if let oversized {
            throw APIError(.batchTooLarge, "'\(oversized.field)' asks for \(oversized.count) requests in one; this router serves at most \(maxBatch) (--max-batch-size)")
        }
        if let ownedField { throw APIError(.routerOwnedField, "'\(ownedField)' is set by the router\(pd ? " in PD mode" : " with --dp-aware"); leave it out") }
        if let duplicate {
            throw APIError(.duplicateField, "field '\(duplicate)' appears more than once; the router and the worker could read different values")
        }
        let routing = RoutingRequest(
            routingText: routingText,
            routingKey: Tenancy.routingKey(head.headers.first(name: "x-smg-routing-key"), tenant: tenant),
            targetWorker: head.headers.first(name: "x-smg-target-worker").flatMap { Int($0) })
        return ExchangePlan(kind: pd ? .prefillDecode(batchSize: batchSize, mergeLogprobs: returnLogprob) : .singleWorker,
                            endpoint: kind.endpoint, model: model?.isEmpty == true ? nil : model, stream: stream, routing: routing,
                            isInference: true, head: head, body: body, bodyIsEmptyObject: emptyObject, requestID: requestID)
    }

    /// The fields that name a data-parallel rank, which the router sets with --dp-aware.
    static let rankFields: [StaticString] = ["data_parallel_rank", "routed_dp_rank", "disagg_prefill_dp_rank"]

    /// `GET /get_server_info` and the like: any healthy worker answers, with no body.
    static func anyWorker(path: Substring, head: HTTPRequestHead, requestID: String) -> ExchangePlan {
        ExchangePlan(endpoint: String(path.dropFirst()), isInference: false, head: head, body: ByteBuffer(), requestID: requestID)
    }
}
