import Foundation
import Logging
import Synchronization

/// `--session-store redis`: `manual`'s routing-key → worker assignments, also kept in Redis, so
/// sticky sessions survive a restart of every router and are shared by routers that are not in
/// one mesh. The router's own table (and the mesh, when on) stays the fast path: Redis is read
/// only when a key is not known here, with a short deadline, and written after the routing
/// decision without delaying the request.
///
/// Key `smg:session:{length}:{policy}:{routing key}`, where the policy is the registry key of the
/// one that made the assignment (the model, or "prefill:<model>" / "decode:<model>" in PD mode;
/// the length keeps it and the key apart whatever they contain), value the candidate it chose
/// (the worker's id, stable: derived from its URL; "id@rank" with `--dp-aware`), expiring
/// after `--max-idle-secs`. A key in use is written again at most once per quarter of that, so
/// it never expires while used and a busy key costs one write per quarter-idle period.
final class RedisSessions: Sendable {
    let redis: RedisClient
    let idleMs: UInt64
    let logger: Logger
    let metrics: RouterMetrics
    /// A read that takes longer than this routes as if Redis had no assignment.
    static let lookupDeadline = Duration.milliseconds(200)
    /// When each key was last written from here (monotonic ms); bounded.
    private let written = Mutex<[String: UInt64]>([:])
    static let maxTracked = 100_000

    /// Where writes go, so none is left running when the router stops.
    let writes: BackgroundWrites

    init(redis: RedisClient, idleSecs: UInt64, logger: Logger, metrics: RouterMetrics, writes: BackgroundWrites) {
        self.redis = redis
        self.writes = writes
        self.metrics = metrics
        self.idleMs = max(1, idleSecs) * 1000
        self.logger = logger
    }

    static func key(model: String, routingKey: String) -> String {
        "smg:session:\(model.utf8.count):\(model):\(routingKey)"
    }

    /// The worker Redis holds for a key, or nil (none, Redis down, or too slow).
    func lookup(model: String, routingKey: String) async -> String? {
        let key = Self.key(model: model, routingKey: routingKey)
        let redis = self.redis
        let metrics = self.metrics
        // Whichever comes first answers; the slower one finds the continuation taken. (A task
        // group would wait for the Redis call to finish even after the deadline won.)
        return await withCheckedContinuation { (continuation: CheckedContinuation<String?, Never>) in
            let once = FirstAnswer(continuation)
            Task {
                do {
                    let worker = try await redis.send(["GET", key], idempotent: true).text
                    if once.resume(worker) { metrics.sessionLookup(worker == nil ? "missing" : "found") }
                } catch {
                    if once.resume(nil) { metrics.sessionLookup("unavailable") }
                }
            }
            Task {
                try? await Task.sleep(for: Self.lookupDeadline)
                if once.resume(nil) { metrics.sessionLookup("unavailable") }
            }
        }
    }

    /// The router used `worker` for a key: written when the assignment is new or changed, or
    /// when the last write from here is a quarter of the idle time old.
    func used(model: String, routingKey: String, worker: String, changed: Bool, now: UInt64) {
        let key = Self.key(model: model, routingKey: routingKey)
        let due = written.withLock { table -> Bool in
            if !changed, let last = table[key], now &- last < idleMs / 4 { return false }
            if table.count >= Self.maxTracked { table.removeAll(keepingCapacity: true) }
            table[key] = now
            return true
        }
        guard due else { return }
        let (redis, ttl, logger) = (self.redis, String(idleMs), self.logger)
        // One try: a session write is a hint (losing one costs a cache hit, not data).
        let job = BackgroundWrites.Job(kind: "session", bytes: key.utf8.count + worker.utf8.count + 64, delays: [], attempt: {
            do {
                _ = try await redis.send(["SET", key, worker, "PX", ttl], idempotent: true)
                return true
            } catch {
                logger.debug("session not written to Redis", metadata: ["error": "\(error)"])
                return false
            }
        }, lost: {})
        if !writes.submit(job) { logger.debug("session not written to Redis: too many writes pending") }
    }
}

/// A continuation resumed by whichever of several racers answers first.
private final class FirstAnswer<T: Sendable>: Sendable {
    private let pending: Mutex<CheckedContinuation<T, Never>?>
    init(_ continuation: CheckedContinuation<T, Never>) { pending = Mutex(continuation) }
    /// Resumes with `value` if nobody did yet; true when this call did.
    @discardableResult
    func resume(_ value: T) -> Bool {
        guard let c = pending.withLock({ $0.take() }) else { return false }
        c.resume(returning: value)
        return true
    }
}
