import Synchronization

/// What `/dashboard` shows as "now": requests, server errors and cache-aware hits counted as
/// they happen (a relaxed atomic add each), turned into rates over the last ten seconds or so
/// when someone asks. Samples are taken only when asked, so a router nobody watches does no
/// work for it; with several viewers, a sample less than a second old is reused.
final class RecentRates: Sendable {
    private let answered = Atomic<Int>(0)
    private let serverErrors = Atomic<Int>(0)
    private let decisions = Atomic<Int>(0)
    private let cacheHits = Atomic<Int>(0)

    struct Sample: Equatable {
        var atMs: UInt64
        var answered, serverErrors, decisions, cacheHits: Int
    }
    /// Oldest first, at most a minute of them.
    private let samples = Mutex<[Sample]>([])

    struct Rates: Equatable {
        var requestsPerSecond: Double
        var serverErrorsPerSecond: Double
        /// Cache-aware decisions that hit, over all of them in the window (nil: none).
        var cacheHitRatio: Double?
        var windowSeconds: Double
    }

    /// A request was answered with `status` (any route).
    func answered(status: Int) {
        answered.add(1, ordering: .relaxed)
        if status >= 500 { serverErrors.add(1, ordering: .relaxed) }
    }

    /// A cache-aware decision.
    func decided(cacheHit: Bool) {
        decisions.add(1, ordering: .relaxed)
        if cacheHit { cacheHits.add(1, ordering: .relaxed) }
    }

    /// The rates since the newest sample at least `windowMs` old (or the oldest there is); nil
    /// until two samples a second apart exist.
    func rates(nowMs: UInt64, windowMs: UInt64 = 10_000) -> Rates? {
        let now = Sample(atMs: nowMs, answered: answered.load(ordering: .relaxed), serverErrors: serverErrors.load(ordering: .relaxed),
                         decisions: decisions.load(ordering: .relaxed), cacheHits: cacheHits.load(ordering: .relaxed))
        return samples.withLock { s in
            if s.last.map({ nowMs &- $0.atMs >= 1000 }) ?? true { s.append(now) }
            s.removeAll { nowMs &- $0.atMs > 60_000 }
            guard let base = s.last(where: { nowMs &- $0.atMs >= windowMs }) ?? s.first, nowMs &- base.atMs >= 1000 else { return nil }
            let seconds = Double(nowMs - base.atMs) / 1000
            let decided = now.decisions - base.decisions
            return Rates(requestsPerSecond: Double(now.answered - base.answered) / seconds,
                         serverErrorsPerSecond: Double(now.serverErrors - base.serverErrors) / seconds,
                         cacheHitRatio: decided > 0 ? Double(now.cacheHits - base.cacheHits) / Double(decided) : nil,
                         windowSeconds: seconds)
        }
    }
}
