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

    static func plan(_ kind: Route.Inference, head: HTTPRequestHead, body: ByteBuffer, requestID: String, state: RouterState) throws(APIError) -> ExchangePlan {
        var model: String?
        var stream = false
        var routingText: [UInt8] = []
        let wantsText = state.policyUsesText
        var duplicate: StaticString?
        let failure: JSONScanner.Failure? = body.withUnsafeReadableBytes { bytes -> JSONScanner.Failure? in
            do throws(JSONScanner.Failure) {
                let members = try JSONScanner.scanObject(bytes)
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
        if let duplicate {
            throw .badRequest("duplicate_field", "field '\(duplicate)' appears more than once; the router and the worker could read different values")
        }
        let routing = RoutingRequest(
            routingText: routingText,
            routingKey: head.headers.first(name: "x-smg-routing-key"),
            targetWorker: head.headers.first(name: "x-smg-target-worker").flatMap { Int($0) })
        return ExchangePlan(endpoint: kind.endpoint, model: model?.isEmpty == true ? nil : model, stream: stream, routing: routing,
                            isInference: true, head: head, body: body, requestID: requestID)
    }

    /// `GET /get_server_info` and the like: any healthy worker answers, with no body.
    static func anyWorker(path: Substring, head: HTTPRequestHead, requestID: String) -> ExchangePlan {
        ExchangePlan(endpoint: String(path.dropFirst()), isInference: false, head: head, body: ByteBuffer(), requestID: requestID)
    }
}
