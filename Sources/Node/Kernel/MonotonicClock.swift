import NIOCore

/// The router's one clock for decisions: monotonic milliseconds, read by every policy, breaker,
/// bucket and timer book. Pure cores take it as an input (`clock:` parameters), so tests can
/// pass their own.
enum MonotonicClock {
    @Sendable static func nowMs() -> UInt64 { NIODeadline.now().uptimeNanoseconds / 1_000_000 }
}
