import NIOCore
import NIOHTTP1

/// What the owner of an `UpstreamCall` hears, in order and on the pool's loop: one head, body
/// parts, then one end or one failure; nothing after that, and nothing after `close()`. The
/// exchange state machine relies on this order (an event out of it is a bug, not a worker's
/// doing), so whatever a worker sends is normalised here.
protocol UpstreamCallDelegate: AnyObject {
    func callHead(_ call: UpstreamCall, _ head: HTTPResponseHead)
    func callBody(_ call: UpstreamCall, _ buffer: ByteBuffer)
    /// The worker's socket has nothing more for now: the moment to flush to the client.
    func callReadComplete(_ call: UpstreamCall)
    /// The answer is complete; the call holds the connection until `release()` or `close()`.
    func callEnded(_ call: UpstreamCall, reusable: Bool)
    /// The call is over without a complete answer: the connection could not be had (the
    /// pool's error), it closed (`UpstreamError.closedBeforeResponse`/`closedMidResponse`), or
    /// `UpstreamError.timedOut`. Its connection is already closed.
    func callFailed(_ call: UpstreamCall, _ error: any Error)
}

/// One request to one worker: the only place that takes a connection from the pool, writes the
/// request, enforces its deadline and, when a pooled keep-alive connection turns out to have
/// been closed by the worker before any answer byte (the request never reached it), sends it
/// once more on a fresh connection, which is no failure. An inference attempt uses one per
/// half (the whole request, or PD's prefill and decode halves); control-path fetches use one
/// each. Everything runs on the pool's loop.
final class UpstreamCall: UpstreamResponseDelegate {
    let worker: WorkerURL
    private let head: HTTPRequestHead
    private let body: ByteBuffer?
    private let pool: UpstreamPool
    /// Strong, as the connection's reference to this call (see `UpstreamHandler.delegate`):
    /// cleared when the call ends, fails or is closed.
    private var delegate: (any UpstreamCallDelegate)?
    private var connection: PooledConnection?
    private var deadline: Scheduled<Void>?
    private var resent = false
    /// `close()` was called: a `start` after it sends nothing.
    private var closed = false
    private var answered = false
    /// The status of the worker's answer, once its head arrived (0 before).
    private(set) var status = 0
    /// Why the call failed, once it did.
    private(set) var failure: (any Error)?
    /// When it was started (for how long a worker took).
    private(set) var startedAt = NIODeadline.uptimeNanoseconds(0)

    init(to worker: WorkerURL, head: HTTPRequestHead, body: ByteBuffer?, pool: UpstreamPool) {
        self.worker = worker
        self.head = head
        self.body = body
        self.pool = pool
    }

    /// Sends the request; its answer goes to `delegate`. `timeout`: the whole call, connecting
    /// included, is given up (`callFailed` with `UpstreamError.timedOut`) when it runs out.
    func start(delegate: any UpstreamCallDelegate, timeout: TimeAmount?) {
        guard !closed else { return }
        self.delegate = delegate
        startedAt = .now()
        if let timeout {
            deadline = pool.loop.assumeIsolated().scheduleTask(in: timeout) { [self] in
                deadline = nil
                fail(UpstreamError.timedOut)
            }
        }
        send(fresh: false)
    }

    /// After `callEnded`: the connection goes back to the pool when the worker keeps it open
    /// (a stream, never pooled, is let go there too); otherwise it is given up.
    func release(reusable: Bool) {
        guard let c = connection else { return }
        connection = nil
        if reusable { pool.release(c) } else { c.abandon() }
    }

    /// The call is not wanted any more (or its answer is finished with): the connection is
    /// closed and nothing more is reported.
    func close() {
        closed = true
        delegate = nil
        cancelDeadline()
        closeConnection()
    }

    /// Backpressure: stop (or resume) reading the worker's answer.
    func setAutoRead(_ on: Bool) {
        connection?.channel.setOption(ChannelOptions.autoRead, value: on).whenFailure { _ in }
    }

    private func send(fresh: Bool) {
        pool.acquire(worker, fresh: fresh) { [self] result in
            switch result {
            case .failure(let error):
                fail(error)
            case .success(let c):
                guard delegate != nil else { return c.abandon() }
                connection = c
                c.handler.delegate = self
                c.send(head, body: body)
            }
        }
    }

    private func cancelDeadline() {
        deadline?.cancel()
        deadline = nil
    }

    private func closeConnection() {
        guard let c = connection else { return }
        connection = nil
        c.handler.delegate = nil
        c.abandon()
    }

    private func fail(_ error: any Error) {
        if failure == nil { failure = error }
        cancelDeadline()
        closeConnection()
        guard let d = delegate else { return }
        delegate = nil
        d.callFailed(self, error)
    }

    // MARK: the connection's events (UpstreamResponseDelegate)

    func upstreamHead(_ response: HTTPResponseHead) {
        guard !answered, let delegate else { return }
        answered = true
        status = Int(response.status.code)
        delegate.callHead(self, response)
    }

    func upstreamBody(_ buffer: ByteBuffer) {
        guard answered, let delegate else { return }
        delegate.callBody(self, buffer)
    }

    func upstreamReadComplete() {
        guard answered, let delegate else { return }
        delegate.callReadComplete(self)
    }

    func upstreamEnd(reusable: Bool) {
        guard answered, let d = delegate else { return fail(UpstreamError.closedBeforeResponse) }
        cancelDeadline()
        delegate = nil
        d.callEnded(self, reusable: reusable)
    }

    func upstreamFailed(_ error: any Error) {
        let stale = connection?.handler.reused == true && !answered && !resent
        connection = nil
        if stale, delegate != nil, case UpstreamError.closedBeforeResponse = error {
            resent = true
            return send(fresh: true)
        }
        fail(error)
    }
}
