/// The books an attempt keeps on its worker, the same for a whole request and for the prefill
/// half of a PD one: a breaker slot and in-flight counts (the worker's and, with --dp-aware, its
/// rank's) when it starts; the counts given back and the breaker told how it went when it ends.
extension Worker {
    func attemptStarted(rank: Int?, now: UInt64) {
        _ = breakerAcquire(now: now)
        requestStarted()
        if let rank { rankStarted(rank) }
    }

    /// A breaker transition this causes is counted and logged.
    func attemptEnded(rank: Int?, success: Bool, state: RouterState) {
        requestFinished()
        if let rank { rankFinished(rank) }
        if let change = breakerRecord(success: success, now: state.nowMs()) {
            state.metrics.breakerTransition(worker: url.canonical, to: change.rawValue)
            state.logger.warning("circuit breaker \(change.rawValue)", metadata: ["worker": "\(url.canonical)"])
        }
    }
}
