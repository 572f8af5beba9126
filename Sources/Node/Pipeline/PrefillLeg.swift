import NIOCore
import NIOHTTP1

/// The prefill half of a PD attempt: the same request (with the same bootstrap fields) sent to
/// the prefill worker at the same time as to the decode worker. Its answer is drained, never
/// relayed: what the client gets is the decode worker's. It keeps its own books on the prefill
/// worker (in-flight count, circuit breaker) and lives until its answer has been read, also
/// after the exchange has finished, so the connection goes back to the pool clean.
///
/// A transport error or a 5xx answer is reported once through `onFailure`: the exchange then
/// fails the attempt (and retries with a new pair) unless the decode answer is already relayed.
final class PrefillLeg: UpstreamResponseDelegate {
    let worker: Worker
    /// With --dp-aware: the rank of `worker` this half runs on.
    private let rank: Int?
    private let head: HTTPRequestHead
    private let body: ByteBuffer
    private let pool: UpstreamPool
    private let state: RouterState
    private var onFailure: (() -> Void)?
    private var connection: PooledConnection?
    private var status = 0
    private var resent = false
    private(set) var isDone = false
    /// With `return_logprob`: the prefill's answer is kept (up to `maxCollected` bytes) and its
    /// input logprobs handed to `onAnswer` when the leg ends (empty lists if it failed).
    private var onAnswer: (([[JSONValue]]) -> Void)?
    private var collected: [UInt8] = []
    static let maxCollected = 64 << 20

    init(worker: Worker, rank: Int?, head: HTTPRequestHead, body: ByteBuffer, pool: UpstreamPool, state: RouterState, onFailure: @escaping () -> Void) {
        self.worker = worker
        self.rank = rank
        self.head = head
        self.body = body
        self.pool = pool
        self.state = state
        self.onFailure = onFailure
    }

    private var startedMs: UInt64 = 0

    /// Keeps the answer and calls `handler` with the prefill's input logprobs when the leg ends.
    func collectLogprobs(_ handler: @escaping ([[JSONValue]]) -> Void) { onAnswer = handler }

    /// The timer that ends a prefill that never answers (`--request-timeout-secs`): its answer
    /// is not needed once the attempt is over, but its connection and counts must not leak.
    private var deadline: Scheduled<Void>?

    func start(timeout: TimeAmount) {
        startedMs = state.nowMs()
        worker.attemptStarted(rank: rank, now: startedMs)
        deadline = pool.loop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            deadline = nil
            guard !isDone else { return }
            closeConnection()
            state.metrics.pdPrefillFailure(worker: worker.url.canonical, reason: "timeout")
            finish(success: false)
        }
        connect(fresh: false)
    }

    private func closeConnection() {
        if let c = connection {
            connection = nil
            c.handler.delegate = nil
            c.channel.close(promise: nil)
        }
    }

    /// The attempt is over without needing this half (the decode worker failed, the client
    /// left): the prefill's connection is closed and its worker not blamed.
    func cancel() {
        guard !isDone else { return }
        onFailure = nil
        onAnswer?([])
        onAnswer = nil
        closeConnection()
        finish(success: true)
    }

    private func connect(fresh: Bool) {
        pool.acquire(worker.url, fresh: fresh) { [self] result in
            guard !isDone else {
                if case .success(let c) = result { c.channel.close(promise: nil) }
                return
            }
            switch result {
            case .failure: fail()
            case .success(let c):
                connection = c
                c.handler.delegate = self
                c.send(head, body: body)
            }
        }
    }

    // MARK: UpstreamResponseDelegate

    func upstreamHead(_ response: HTTPResponseHead) { status = Int(response.status.code) }
    func upstreamBody(_ buffer: ByteBuffer) {
        guard onAnswer != nil, collected.count + buffer.readableBytes <= Self.maxCollected else { return }
        collected += buffer.readableBytesView
    }
    func upstreamReadComplete() {}

    func upstreamEnd(reusable: Bool) {
        if let c = connection {
            connection = nil
            if reusable { pool.release(c) } else { c.handler.delegate = nil; c.channel.close(promise: nil) }
        }
        if status >= 500 {
            state.metrics.pdPrefillFailure(worker: worker.url.canonical, reason: "status_\(status)")
            finish(success: false)
        } else {
            finish(success: true)
        }
    }

    func upstreamFailed(_ error: any Error) {
        let reused = connection?.handler.reused ?? false
        connection = nil
        // A pooled connection the worker had closed: the request never reached it; once more
        // on a fresh connection.
        if case UpstreamError.closedBeforeResponse = error, reused, !resent {
            resent = true
            return connect(fresh: true)
        }
        fail()
    }

    private func fail() {
        state.metrics.pdPrefillFailure(worker: worker.url.canonical, reason: "transport")
        finish(success: false)
    }

    /// Settles the books once; a failure is then reported to the exchange (which may cancel
    /// this leg: it is already done by then, so the worker stays blamed).
    private func finish(success: Bool) {
        guard !isDone else { return }
        isDone = true
        deadline?.cancel()
        deadline = nil
        let callback = onFailure
        onFailure = nil
        if let answer = onAnswer {
            onAnswer = nil
            answer(success && status < 300 ? PDLogprobs.inputLogprobs(fromPrefillAnswer: collected) : [])
            collected = []
        }
        state.metrics.pdPrefillDuration(seconds: Double(state.nowMs() - startedMs) / 1000)
        defer { if !success { callback?() } }
        worker.attemptEnded(rank: rank, success: success, state: state)
    }
}
