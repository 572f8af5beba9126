import Logging
import NIOCore
import Reliability

/// The periodic look at every busy worker that makes a silent pile of requests a wedge
/// (`Liveness.review`), and the one place a worker's liveness verdict is reported: one log line
/// and one count per change, wherever the change was seen (this look, a call's failure, a
/// response, a probe, a load poll), and the change passed to `watch.livenessChanged` (the mesh
/// tells the other routers).
enum LivenessWatch {
    /// Four looks per wedge bound (at least every 250 ms); nil when the wedge rule is off (a
    /// stall is seen where a call fails, with no look needed).
    static func service(_ watch: WorkerWatch) -> PeriodicTask? {
        let rule = watch.config.workerLoad.liveness
        guard rule.wedgeMs > 0, let loop = watch.pools.loops.first else { return nil }
        let every = TimeAmount.milliseconds(Int64(max(250, rule.wedgeMs / 4)))
        return PeriodicTask("liveness", on: loop, initialDelay: every, every: every) {
            let now = MonotonicClock.nowMs()
            for w in watch.registry.all {
                if let verdict = w.reviewLiveness(now: now, rule: rule) { changed(w, to: verdict, watch: watch) }
            }
        }
    }

    /// A new verdict seen by this router's services: reported, and passed on (`watch.livenessChanged`).
    static func changed(_ w: Worker, to verdict: Liveness, watch: WorkerWatch) {
        report(w, to: verdict, metrics: watch.metrics, log: watch.logger)
        watch.livenessChanged(w, verdict)
    }

    /// Reports a new verdict: entering a veto is counted (`smg_worker_stall_transitions_total`)
    /// and logged as a warning; leaving one is logged. `peer`: the router whose verdict this
    /// router adopted.
    static func report(_ w: Worker, to verdict: Liveness, metrics: RouterMetrics, log: Logger, peer: String? = nil) {
        var metadata: Logger.Metadata = ["worker": "\(w.url.canonical)"]
        if let peer { metadata["peer"] = "\(peer)" }
        let seen = peer == nil ? "" : " (seen by another router)"
        guard let reason = verdict.reason else { return log.info("worker alive again\(seen)", metadata: metadata) }
        if verdict.wedge == .probing && !verdict.stalled {
            return log.info("worker's requests are gone; it may take one at a time until it answers", metadata: metadata)
        }
        metrics.livenessVeto(worker: w.url.canonical, reason: reason)
        metadata["in_flight"] = "\(w.inFlight)"
        log.warning(reason == "stall" ? "worker stalled: no answer after silence; no new requests until it answers"
                                      : "worker wedged: requests in flight and no token; no new requests until it makes progress\(seen)",
                    metadata: metadata)
    }

    /// A probe or a load poll answered (any status).
    static func contacted(_ w: Worker, now: UInt64, watch: WorkerWatch) {
        if w.contacted(now: now) != nil { changed(w, to: w.livenessVerdict, watch: watch) }
    }

    /// A call to the worker got no answer at all.
    static func transportFailed(_ w: Worker, now: UInt64, watch: WorkerWatch) {
        if let verdict = w.transportFailed(now: now, rule: watch.config.workerLoad.liveness) { changed(w, to: verdict, watch: watch) }
    }
}
