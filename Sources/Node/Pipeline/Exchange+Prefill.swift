import NIOCore
import NIOHTTP1

/// PD mode: the current attempt's prefill half (a `PrefillLeg`) and the answer's end, which with
/// `return_logprob` waits for the prefill's prompt logprobs to be merged in front of the decode's.
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
        state.metrics.routerError(endpoint: plan.endpoint, code: "upstream_error")
        if headHeld {
            client.respond(error: .upstreamFailed("the decode worker's answer exceeds \(PDLogprobs.maxHeldBytes) bytes"), extra: HTTPHeaders())
        } else {
            client.abortResponse()
        }
    }

    /// PD with `return_logprob`: the current prefill half ended with these lists (none if it failed).
    func prefillAnswered(_ leg: PrefillLeg, _ lists: [[JSONValue]]) {
        guard leg === prefill, logprobs != nil else { return }
        let ready = logprobs!.prefillAnswered(lists)
        if !ready.isEmpty {
            client.sendBody(ByteBuffer(bytes: ready))
            client.flush()
        }
        if endAwaitsPrefill {
            endAwaitsPrefill = false
            finishResponse()
        }
    }

    /// The current attempt's prefill half is not needed any more.
    func cancelPrefill() {
        let leg = prefill
        prefill = nil
        leg?.cancel()
        logprobs = nil
    }

    /// PD: the prefill half of the current attempt failed.
    func prefillFailed(_ leg: PrefillLeg) {
        guard leg === prefill else { return }
        prefill = nil
        failedPrefills.insert(leg.worker.id)
        lastFailedPrefill = leg.worker
        failedRole = .prefill
        perform(machine.otherLegFailed(now: state.nowMs()))
    }

    /// Starts the prefill half of a PD attempt on `p` and returns the body for the decode half.
    /// Both halves get the prefill's address and a fresh room per attempt; with --dp-aware each
    /// half its rank (`routed_dp_rank`) and the decode half the prefill's
    /// (`disagg_prefill_dp_rank`: where its KV cache is).
    /// The half is given up 1 ms before the attempt's own deadline, so a prefill that never
    /// answers is what ends the attempt (counted as its timeout), not the decode half's wait.
    func startPrefillHalf(on p: Worker, batchSize: Int?, mergeLogprobs: Bool, deadlineMs: UInt64) -> ByteBuffer {
        let fields = BootstrapFields(host: p.url.host, port: p.bootstrapPort, batchSize: batchSize, using: &rng)
        let shared = fields.inserted(into: plan.body, objectIsEmpty: plan.bodyIsEmptyObject)
        var prefillBody = shared, decodeBody = shared
        if let rank = prefillChoice?.rank {
            prefillBody = JSONObjectBody.appending(#""routed_dp_rank":\#(rank)"#, to: prefillBody, objectIsEmpty: false)
            decodeBody = JSONObjectBody.appending(#""disagg_prefill_dp_rank":\#(rank)"#, to: decodeBody, objectIsEmpty: false)
        }
        if let rank = selectedRank { decodeBody = JSONObjectBody.appending(#""routed_dp_rank":\#(rank)"#, to: decodeBody, objectIsEmpty: false) }
        let prefillHead = UpstreamHeaders.request(plan.head, host: p.url.hostHeader, bodyLength: prefillBody.readableBytes, requestID: plan.requestID,
                                                  bearer: p.apiKey ?? state.config.apiKey, clientAddress: plan.clientAddress)
        var leg: PrefillLeg?
        leg = PrefillLeg(worker: p, rank: prefillChoice?.rank, head: prefillHead, body: prefillBody, pool: pool, state: state) { [self] in
            if let leg { prefillFailed(leg) }
        }
        prefill = leg
        if mergeLogprobs {
            logprobs = PDLogprobs(stream: plan.stream)
            leg!.collectLogprobs { [self] lists in if let leg { prefillAnswered(leg, lists) } }
        }
        let now = state.nowMs()
        leg!.start(timeout: .milliseconds(Int64(deadlineMs > now + 1 ? deadlineMs - now - 1 : 0)))
        return decodeBody
    }
}
