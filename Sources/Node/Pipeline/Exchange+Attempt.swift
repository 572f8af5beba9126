import NIOCore
import NIOHTTP1

/// One attempt on a worker: the bodies and head it is sent (with PD's bootstrap fields and DP
/// ranks), its deadline, its connection, and its end settled exactly as the machine says; and
/// the error a failed request gets.
extension Exchange {
    func startAttempt(_ w: Worker, deadlineMs: UInt64, firstAttempt: Bool) {
        if firstAttempt, plan.isInference, let choice { recordDecision(choice) }
        w.attemptStarted(rank: selectedRank, now: plan.routing.now)
        failedRole = .decode
        attemptBody = nil
        if case .prefillDecode(let batchSize, let mergeLogprobs) = plan.kind, let p = prefillChoice?.worker {
            attemptBody = startPrefillHalf(on: p, batchSize: batchSize, mergeLogprobs: mergeLogprobs, deadlineMs: deadlineMs)
        } else if let rank = selectedRank {
            attemptBody = JSONObjectBody.appending(#""data_parallel_rank":\#(rank)"#, to: plan.body, objectIsEmpty: plan.bodyIsEmptyObject)
        }
        upstreamHead = UpstreamHeaders.request(plan.head, host: w.url.hostHeader, bodyLength: (attemptBody ?? plan.body).readableBytes,
                                               requestID: plan.requestID, bearer: w.apiKey ?? state.config.apiKey,
                                               clientAddress: plan.clientAddress)
        let now = state.nowMs()
        attemptTimer = pool.loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(deadlineMs &- min(now, deadlineMs)))) { [self] in
            self.attemptTimer = nil
            self.perform(self.machine.attemptTimerFired(now: self.state.nowMs()))
        }
        acquireConnection(fresh: false)
    }

    func acquireConnection(fresh: Bool) {
        guard case .connecting(let attempt) = machine.state else { return }
        pool.acquire(attempt.target.url, fresh: fresh) { [self] result in
            switch result {
            case .failure:
                self.perform(self.machine.connectFailed(now: self.state.nowMs()))
            case .success(let c):
                let action = self.machine.connected(reused: c.handler.reused)
                if case .discardConnection = action { return c.channel.close(promise: nil) }
                self.upstream = c
                c.handler.delegate = self
                self.perform(action)
            }
        }
    }

    func sendRequest() {
        guard let c = upstream, let head = upstreamHead else { return }
        c.send(head, body: attemptBody ?? plan.body)
    }

    /// Ends an attempt exactly as the machine says: timer, in-flight count, breaker, connection.
    func endAttempt(_ end: Machine.AttemptEnd) {
        attemptTimer?.cancel()
        attemptTimer = nil
        end.target.attemptEnded(rank: selectedRank, success: end.breakerSuccess, state: state)
        if let c = upstream {
            upstream = nil
            switch end.connection {
            case .release: pool.release(c)
            case .close, .none:
                c.handler.delegate = nil
                c.channel.close(promise: nil)
            }
        }
    }

    func apiError(_ failure: Machine.Failure, worker: Worker?) -> (APIError, HTTPHeaders) {
        var extra = HTTPHeaders()
        switch failure {
        case .rateLimited:
            extra.add(name: "retry-after", value: String(state.admission.retryAfterSeconds))
            return (.rateLimited, extra)
        case .queueTimeout: return (.queueTimeout(state.config.admission.queueTimeoutMs / 1000), extra)
        case .modelNotFound: return (.modelNotFound(plan.model ?? ""), extra)
        case .noWorkers:
            guard case .prefillDecode = plan.kind, let role = failedRole else { return (.noWorkers(plan.model), extra) }
            return (APIError(.serviceUnavailable, code: "no_\(role.rawValue)_workers",
                             "no healthy \(role.rawValue) worker\(plan.model.map { " for model \($0)" } ?? "") is available"), extra)
        case .upstreamTimeout:
            let error = APIError.upstreamTimeout(state.config.requestTimeoutSecs)
            guard case .prefillDecode = plan.kind else { return (error, extra) }
            return (APIError(error.status, code: "decode_timeout", error.message), extra)
        case .upstreamFailed:
            guard case .prefillDecode = plan.kind else { return (.upstreamFailed("worker \(worker?.url.canonical ?? "?") failed"), extra) }
            let role = failedRole ?? .decode
            let url = (role == .prefill ? lastFailedPrefill : worker)?.url.canonical ?? "?"
            return (APIError(.badGateway, code: "\(role.rawValue)_failed",
                             "the \(role.rawValue) half of the request failed (\(url)); the KV cache never reached a decode worker"), extra)
        }
    }
}
