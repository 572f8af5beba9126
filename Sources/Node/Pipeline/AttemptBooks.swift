import Reliability

/// The books an attempt keeps on its worker, the same for a whole request and for the prefill
/// half of a PD one: a breaker slot and in-flight counts (the worker's and, with --dp-aware, its
/// rank's) when it starts; the counts given back and the breaker told how it went when it ends.
extension Worker {
    /// `wasIdle`: the worker had nothing else in flight from this router; `breaker`: the
    /// attempt is the first probe of an open breaker (the caller counts it).
    @discardableResult
    func attemptStarted(rank: Int?, now: UInt64) -> (wasIdle: Bool, breaker: CircuitBreaker.Transition?) {
        let change = breakerAcquire(now: now)
        let first = requestStarted()
        if first { becameBusy(now: now) }
        if let rank { rankStarted(rank) }
        return (first, change)
    }

    /// Returns the breaker's transition, if this outcome caused one (the caller counts and logs it).
    func attemptEnded(rank: Int?, success: Bool, now: UInt64) -> CircuitBreaker.Transition? {
        requestFinished()
        if let rank { rankFinished(rank) }
        return breakerRecord(success: success, now: now)
    }
}
