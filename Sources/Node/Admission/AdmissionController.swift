import NIOCore
import Reliability
import Synchronization

/// Admission knobs: `--max-concurrent-requests`, `--queue-size`, `--queue-timeout-secs`,
/// `--rate-limit-tokens-per-second`.
public struct AdmissionConfig: Sendable, Equatable {
    /// nil: unlimited.
    public var maxConcurrent: Int?
    public var queueSize = 100
    public var queueTimeoutMs: UInt64 = 60_000
    /// nil: no rate limit.
    public var tokensPerSecond: Double?
    public init() {}

    var isActive: Bool { maxConcurrent != nil || tokensPerSecond != nil }
}

/// The gate in front of the workers: a real cap on in-flight inference requests, a bounded
/// FIFO queue with a timeout, and an optional token bucket. Shared by all event loops (one
/// lock); a waiter is woken on its own loop. Every admitted request must call `release()`
/// exactly once, however it ends.
///
/// With the mesh, the token bucket's rate is this router's share of the cluster-wide budget,
/// following demand (`DemandShares`, driven by `MeshBridge.budgetSharing`).
public final class AdmissionController: Sendable {
    public enum Result: Sendable { case admitted, queueFull, timedOut }

    struct Waiter {
        let ticket: UInt64
        let loop: any EventLoop
        let done: @Sendable (Result) -> Void
    }

    struct State {
        var inFlight = 0
        var queue: [Waiter] = []
        var queueHead = 0
        var nextTicket: UInt64 = 0
        var bucket: TokenBucket?
        /// With the mesh: the cluster budget's shares, following each router's demand.
        var shares: DemandShares?
        var drainScheduled = false
        var queueLength: Int { queue.count - queueHead }
    }

    let config: AdmissionConfig
    private let state: Mutex<State>
    private let clock: @Sendable () -> UInt64
    private let metrics: RouterMetrics

    init(config: AdmissionConfig, metrics: RouterMetrics, clock: @escaping @Sendable () -> UInt64) {
        self.config = config
        self.metrics = metrics
        self.clock = clock
        var s = State()
        if let rate = config.tokensPerSecond { s.bucket = TokenBucket(rate: rate, nowMs: clock()) }
        self.state = Mutex(s)
    }

    public var inFlight: Int { state.withLock { $0.inFlight } }
    public var queueDepth: Int { state.withLock { $0.queueLength } }

    private func canAdmit(_ s: inout State, now: UInt64) -> Bool {
        if let cap = config.maxConcurrent, s.inFlight >= cap { return false }
        if s.bucket != nil, !s.bucket!.tryTake(nowMs: now) { return false }
        return true
    }

    /// Admits now, queues, or refuses; `done` runs on `loop` (at once when admitted or refused
    /// without waiting). Returns a ticket for `cancel` while queued.
    @discardableResult
    func admit(on loop: any EventLoop, _ done: @escaping @Sendable (Result) -> Void) -> UInt64? {
        let now = clock()
        enum Immediate { case admitted, refused, queued(UInt64, UInt64?) }
        let outcome: Immediate = state.withLock { s in
            s.shares?.asked(nowMs: now)
            // FIFO: nobody jumps a non-empty queue.
            if s.queueLength == 0, canAdmit(&s, now: now) {
                s.inFlight += 1
                return .admitted
            }
            guard s.queueLength < config.queueSize else { return .refused }
            s.nextTicket += 1
            s.queue.append(Waiter(ticket: s.nextTicket, loop: loop, done: done))
            var wake: UInt64?
            // Queued only for want of a token: wake up when the next one is due.
            if !s.drainScheduled, s.bucket != nil, config.maxConcurrent.map({ s.inFlight < $0 }) ?? true {
                wake = s.bucket!.msUntilToken(nowMs: now)
                s.drainScheduled = wake != nil
            }
            return .queued(s.nextTicket, wake)
        }
        switch outcome {
        case .admitted:
            metrics.admission("admitted")
            done(.admitted)
            return nil
        case .refused:
            metrics.admission("rejected_queue_full")
            done(.queueFull)
            return nil
        case .queued(let ticket, let wake):
            metrics.admission("queued")
            loop.scheduleTask(in: .milliseconds(Int64(config.queueTimeoutMs))) { [self] in expire(ticket) }
            if let wake { scheduleDrain(on: loop, afterMs: wake) }
            return ticket
        }
    }

    /// A queued request gave up (its client left): forget it without waking it.
    func cancel(_ ticket: UInt64) {
        state.withLock { s in
            if let i = s.queue[s.queueHead...].firstIndex(where: { $0.ticket == ticket }) { s.queue.remove(at: i) }
        }
    }

    private func expire(_ ticket: UInt64) {
        let waiter: Waiter? = state.withLock { s in
            guard let i = s.queue[s.queueHead...].firstIndex(where: { $0.ticket == ticket }) else { return nil }
            return s.queue.remove(at: i)
        }
        guard let waiter else { return }
        metrics.admission("rejected_queue_timeout")
        waiter.loop.execute { waiter.done(.timedOut) }
    }

    /// An admitted request finished (success, error, disconnect, timeout): free its slot and
    /// wake whoever can go now.
    func release() {
        state.withLock { s in s.inFlight -= 1 }
        drain()
    }

    private func drain() {
        let now = clock()
        var woken: [Waiter] = []
        var retry: (any EventLoop, UInt64)?
        state.withLock { s in
            s.drainScheduled = false
            while s.queueLength > 0, canAdmit(&s, now: now) {
                woken.append(s.queue[s.queueHead])
                s.queueHead += 1
                s.inFlight += 1
            }
            if s.queueHead > 64, s.queueHead * 2 > s.queue.count {
                s.queue.removeFirst(s.queueHead)
                s.queueHead = 0
            }
            // Still waiting only for tokens: come back when the next one is due.
            if s.queueLength > 0, s.bucket != nil, config.maxConcurrent.map({ s.inFlight < $0 }) ?? true, let ms = s.bucket!.msUntilToken(nowMs: now) {
                s.drainScheduled = true
                retry = (s.queue[s.queueHead].loop, max(1, ms))
            }
        }
        for w in woken {
            metrics.admission("admitted_from_queue")
            w.loop.execute { w.done(.admitted) }
        }
        if let (loop, ms) = retry { scheduleDrain(on: loop, afterMs: ms) }
    }

    private func scheduleDrain(on loop: any EventLoop, afterMs ms: UInt64) {
        loop.scheduleTask(in: .milliseconds(Int64(max(1, ms)))) { [self] in drain() }
    }

    /// Makes `--rate-limit-tokens-per-second` the budget of the whole mesh, shared by demand,
    /// `expectedMembers` routers in it until the mesh says otherwise. The burst is a cluster
    /// budget too: each bucket holds `clusterBurstSeconds` of its share, and starts empty, so
    /// routers starting together bring no burst of their own.
    func shareClusterBudget(expectedMembers: Int) {
        guard let total = config.tokensPerSecond else { return }
        let now = clock()
        state.withLock { s in
            s.shares = DemandShares(config: .init(total: total), nowMs: now)
            s.bucket = TokenBucket(rate: total / Double(max(1, expectedMembers)), burstSeconds: Self.clusterBurstSeconds, full: false, nowMs: now)
        }
    }

    /// The cluster's stored burst, in seconds of its budget (the routers' buckets together):
    /// over any 6 s the cluster admits at most 6.25 s of budget (1.04 R), leaving the shares'
    /// lag room under 1.1 R. A single router keeps a second of its rate, as before.
    static let clusterBurstSeconds = 0.25

    /// This router's demand (requests per second asked for), to tell the others; the next
    /// share is computed from it.
    func tellDemand() -> Double? {
        let now = clock()
        return state.withLock { $0.shares?.tell(nowMs: now) }
    }

    /// What another router said its demand is.
    func heard(from peer: String, demand: Double) {
        let now = clock()
        state.withLock { $0.shares?.heard(from: peer, demand: demand, nowMs: now) }
    }

    /// Sets the bucket's rate to this router's share with `members` routers in the budget;
    /// returns the share.
    @discardableResult
    func applyShare(members: Int) -> Double? {
        let now = clock()
        return state.withLock { s in
            guard let share = s.shares?.share(nowMs: now, members: members) else { return nil }
            s.bucket?.setRate(share, nowMs: now)
            return share
        }
    }

    /// The token bucket's rate now (`--rate-limit-tokens-per-second`, or with the mesh this
    /// router's share of it); nil without a rate limit.
    var tokenRate: Double? { state.withLock { $0.bucket?.rate } }

    /// Seconds a refused client should wait before trying again.
    var retryAfterSeconds: Int { max(1, Int(config.queueTimeoutMs / 1000 / 10)) }
}
