import NIOCore
import NIOHTTP1
import Policies

/// Turns a complete inference request into the plan the pipeline runs: the body is validated
/// as JSON in one pass that also reads the fields routing needs (`model`, `stream`, and the
/// routing text when the policy reads prompts). The caller was authenticated from the head.
enum InferenceRequest {
    static func plan(_ kind: Route.Inference, head: HTTPRequestHead, body: ByteBuffer, requestID: String, state: RouterState) throws(APIError) -> ExchangePlan {
        var model: String?
        var stream = false
        var routingText: [UInt8] = []
        let wantsText = state.policyUsesText
        let failure: JSONScanner.Failure? = body.withUnsafeReadableBytes { bytes -> JSONScanner.Failure? in
            do throws(JSONScanner.Failure) {
                let members = try JSONScanner.scanObject(bytes)
                for m in members {
                    if m.keyEquals("model", in: bytes) { model = m.stringValue(in: bytes) }
                    else if m.keyEquals("stream", in: bytes) { stream = m.boolValue(in: bytes) ?? false }
                }
                if wantsText { routingText = RoutingText.extract(kind, members: members, bytes: bytes) }
                return nil
            } catch let failure {
                return failure
            }
        }
        if let failure { throw .invalidJSON(failure.description) }
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
