import NIOCore
import NIOHTTP1

/// The end of a response: with PD's `return_logprob`, the prompt logprobs merged in front of the
/// decode's (or the 502 when the decode answer is too large to hold for that).
extension Exchange {
    /// Writes what is left of a successful answer and ends it (merged with the prefill's
    /// logprobs when asked).
    func finishResponse() {
        if logprobs != nil {
            let rest = logprobs!.decodeEnded()
            logprobs = nil
            if let held = heldHead {
                heldHead = nil
                var headers = held.headers
                headers.add(name: "content-length", value: String(rest.count))
                client.sendHead(status: held.status, headers: headers)
            }
            if !rest.isEmpty { appendToBurst(ByteBuffer(bytes: rest)) }
        }
        sendBurst()
        client.endResponse()
    }

    /// PD with `return_logprob`: the decode answer outgrew what may be held for merging. The
    /// worker's answer is dropped (as if the client had gone), and the client gets a 502, or,
    /// when part of a stream already went out, a closed connection.
    func decodeAnswerTooLarge() {
        logprobs = nil
        let headHeld = heldHead != nil
        heldHead = nil
        perform(machine.clientClosed())
        state.metrics.routerError(routeLabels, errorType: "upstream_error")
        if headHeld {
            client.respond(error: .upstreamFailed("the decode worker's answer exceeds \(PDLogprobs.maxHeldBytes) bytes"), extra: HTTPHeaders())
        } else {
            client.abortResponse()
        }
    }
}
