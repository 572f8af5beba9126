import Reliability

/// The books an attempt keeps on its worker, the same for a whole request and for the prefill
/// half of a PD one: a breaker slot and in-flight counts (the worker's and, with --dp-aware, its
/// rank's) when it starts; the counts given back and the breaker told how it went when it ends.
extension Worker {
    /// True when the worker had nothing else in flight from this router.
    @discardableResult
    func attemptStarted(rank: Int?, now: UInt64) -> Bool {
        _ = breakerAcquire(now: now)
        let first = requestStarted()
        if let rank { rankStarted(rank) }
        return first
    }

    /// Returns the breaker's transition, if this outcome caused one (the caller counts and logs it).
    func attemptEnded(rank: Int?, success: Bool, now: UInt64) -> CircuitBreaker.State? {
        requestFinished()
        if let rank { rankFinished(rank) }
        return breakerRecord(success: success, now: now)
    }
}
