import Logging
import Reliability
import NIOCore
import Synchronization

/// Active health checks: `GET {worker}{--health-check-endpoint}` with a timeout. A worker
/// whose health is not known yet (start-up, or just added) is checked at once and then every
/// `--worker-startup-check-interval`; a known one every `--health-check-interval-secs`.
/// Results go through each worker's `HealthState` (thresholds in both directions); changes are
/// logged once each. While start-up workers are still awaited, one progress line per start-up
/// interval says which are up and which are not.
final class HealthChecker: Sendable {
    private struct Schedule {
        var next: [String: UInt64] = [:]
        var running: Set<String> = []
    }

    private let watch: WorkerWatch
    /// Told each change of a worker's health (the mesh spreads it to the other routers).
    private let changed: @Sendable (Worker, HealthState.Status) -> Void
    private let schedule = Mutex(Schedule())
    private let startedAt: UInt64
    private let startupWorkers: Set<String>
    private let startupReported = Mutex<(lastLine: UInt64, done: Bool)>((0, false))
    let waker = PeriodicTask.Waker()

    private init(watch: WorkerWatch, startupWorkers: Set<String>, changed: @escaping @Sendable (Worker, HealthState.Status) -> Void) {
        self.watch = watch
        self.changed = changed
        self.startedAt = MonotonicClock.nowMs()
        self.startupWorkers = startupWorkers
    }

    /// The checks as a service ticking on one event loop; nil when health checks are disabled.
    static func service(_ watch: WorkerWatch, changed: @escaping @Sendable (Worker, HealthState.Status) -> Void) -> PeriodicTask? {
        guard watch.config.health.enabled, let loop = watch.pools.loops.first else { return nil }
        let checker = HealthChecker(watch: watch, startupWorkers: Set(watch.registry.all.map(\.id)), changed: changed)
        // A worker added is checked at once (its health is unknown); otherwise the task sleeps
        // until the next check is due, not polling for one.
        watch.registry.onAdded { _ in checker.waker.wake() }
        return PeriodicTask("health checks", on: loop, waker: checker.waker) { checker.tick(on: loop) }
    }

    /// Checks the workers that are due; returns how long until the next is: at least 200 ms;
    /// at most 1 s while start-up progress is reported, else 60 s. A worker added and a check
    /// finished wake the task earlier (`waker`).
    private func tick(on loop: any EventLoop) -> TimeAmount {
        let now = MonotonicClock.nowMs()
        let workers = watch.registry.all
        let due: [Worker] = schedule.withLock { s in
            let live = Set(workers.map(\.id))
            s.next = s.next.filter { live.contains($0.key) }
            var due: [Worker] = []
            for w in workers where !s.running.contains(w.id) && now >= s.next[w.id, default: 0] {
                s.running.insert(w.id)
                due.append(w)
            }
            return due
        }
        for w in due { check(w, on: loop) }
        reportStartup(now: now, workers: workers)
        // A running check wakes the task when it ends; until then it sets no deadline.
        let soonest = schedule.withLock { s in workers.filter { !s.running.contains($0.id) }.map { s.next[$0.id, default: 0] }.min() ?? .max }
        let wait = soonest > now ? soonest - now : 0
        let longest: UInt64 = startupReported.withLock({ $0.done }) || startupWorkers.isEmpty ? 60_000 : 1000
        return .milliseconds(Int64(min(max(wait, 200), longest)))
    }

    private func check(_ w: Worker, on loop: any EventLoop) {
        let health = watch.config.health
        UpstreamFetch.run(pool: watch.pools.pool(for: loop), url: w.url, method: .GET, path: health.endpoint,
                          timeout: .milliseconds(Int64(health.timeoutMs))) { [self] result in
            let ok: Bool
            let reason: String
            switch result {
            case .success(let r) where (200..<300).contains(r.status.code): ok = true; reason = ""
            case .success(let r): ok = false; reason = "answered \(r.status.code) on \(health.endpoint)"
            case .failure(let error): ok = false; reason = "\(error)"
            }
            watch.metrics.healthCheck(workerType: w.workerType, ok: ok)
            // Any answer is contact; none at all after silence stalls the worker (`Liveness`).
            if case .failure = result {
                LivenessWatch.transportFailed(w, now: MonotonicClock.nowMs(), watch: watch)
            } else {
                LivenessWatch.contacted(w, now: MonotonicClock.nowMs(), watch: watch)
            }
            if watch.logger.logLevel <= .debug {
                watch.logger.debug("health check", metadata: ok ? ["worker": "\(w.url.canonical)", "result": "ok"]
                                                                : ["worker": "\(w.url.canonical)", "result": "failed", "reason": "\(reason)"])
            }
            let change = watch.registry.worker(id: w.id) === w ? w.recordHealthCheck(success: ok) : nil
            // The next check: soon while the worker's health is still unknown, else at the interval.
            let every = w.healthStatus == .unknown ? UInt64(watch.config.startupCheckIntervalSecs) * 1000 : UInt64(health.intervalMs)
            let now = MonotonicClock.nowMs()
            schedule.withLock { s in
                s.running.remove(w.id)
                s.next[w.id] = now + every
            }
            waker.wake()
            guard let change else { return }
            changed(w, change)
            if change == .healthy {
                watch.logger.info("worker healthy", metadata: ["worker": "\(w.url.canonical)"])
            } else {
                // Says why: a refused connection, a timeout, a status, or a TLS handshake that
                // failed (certificate not trusted, hostname mismatch, client certificate wanted).
                watch.logger.warning("worker unhealthy", metadata: ["worker": "\(w.url.canonical)", "failed_checks": "\(health.failureThreshold)",
                                                                    "reason": "\(reason)"])
            }
        }
    }

    /// One line per start-up interval while start-up workers are awaited, then one closing line.
    private func reportStartup(now: UInt64, workers: [Worker]) {
        guard !startupWorkers.isEmpty else { return }
        let awaited = workers.filter { startupWorkers.contains($0.id) }
        let waiting = awaited.filter { $0.healthStatus != .healthy }
        let elapsed = (now - startedAt) / 1000
        let timeout = UInt64(watch.config.startupTimeoutSecs)
        let interval = UInt64(watch.config.startupCheckIntervalSecs) * 1000
        let line: String? = startupReported.withLock { r in
            guard !r.done else { return nil }
            if waiting.isEmpty {
                r.done = true
                return "all \(awaited.count) start-up workers ready after \(elapsed) s"
            }
            if elapsed >= timeout {
                r.done = true
                return "gave up waiting after --worker-startup-timeout-secs \(timeout): not ready: \(waiting.map(\.url.canonical).joined(separator: " ")); they stay registered and keep being checked"
            }
            // The first line only once the first checks had their chance.
            guard now - startedAt >= 1000, now - r.lastLine >= interval || r.lastLine == 0 else { return nil }
            r.lastLine = now
            let ready = awaited.count - waiting.count
            return "waiting for workers (\(elapsed)/\(timeout) s): \(ready)/\(awaited.count) ready; waiting for \(waiting.map(\.url.canonical).joined(separator: " "))"
        }
        if let line { watch.logger.info("\(line)") }
    }
}
