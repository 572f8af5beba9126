/// Whether a worker that passes its health probes is alive as a server of requests. Probes ask
/// a separate endpoint; an engine can answer them while it accepts requests and never produces
/// a token (wedged), and a worker that went away shows it only when a connection fails. Two
/// verdicts, each from what the router sees of the worker itself:
///
/// - **wedged**: requests in flight, no token, head or answer from the worker for `wedgeMs`,
///   and its pile of requests four deep or grown since it last produced anything. One long
///   prefill (one request, silent) is not a wedge. A wedged worker gets no new requests; once
///   the requests it holds are gone (they time out, or their clients leave) it may take one at
///   a time (`probing`) until it produces something.
/// - **stalled**: a transport failure (no answer at all: refused, reset, timed out) after
///   `stallMs` without any contact (a response, a probe or a load poll answered). The first
///   contact ends it.
///
/// Any token, head or answer ends a wedge at once. Pure: the caller passes the times and counts.
public struct Liveness: Sendable, Equatable {
    public enum Wedge: Sendable, Equatable {
        case none
        /// No new requests until it produces something.
        case wedged
        /// Its requests are gone: one at a time until it produces something.
        case probing
    }

    public struct Rule: Sendable, Equatable {
        /// `--worker-wedge-secs` in ms; 0: never judged wedged.
        public var wedgeMs: UInt64
        /// `--worker-stall-secs` in ms; 0: never judged stalled.
        public var stallMs: UInt64
        public init(wedgeMs: UInt64 = 3_000, stallMs: UInt64 = 2_000) {
            self.wedgeMs = wedgeMs
            self.stallMs = stallMs
        }
    }

    /// A pile of requests this deep, silent for the wedge bound, is a wedge even if it did not grow.
    public static let wedgeDepth = 4

    public var wedge = Wedge.none
    public var stalled = false

    public init() {}

    /// The metric's and the log's reason, nil while alive.
    public var reason: String? {
        if stalled { return "stall" }
        return wedge == .none ? nil : "wedge"
    }

    /// Whether a new request may go to the worker, with `inFlight` of the router's there now.
    public func admits(inFlight: Int) -> Bool {
        guard !stalled else { return false }
        switch wedge {
        case .none: return true
        case .wedged: return false
        case .probing: return inFlight == 0
        }
    }

    /// The worker produced a head, a token or an answer: alive on both counts. Returns whether
    /// the verdict changed.
    public mutating func progressed() -> Bool {
        let changed = wedge != .none || stalled
        wedge = .none
        stalled = false
        return changed
    }

    /// Another router took the worker for wedged: no new requests from this one either (once
    /// this router holds none there, `review` lets one through at a time, as for its own verdict).
    public mutating func adoptWedged() -> Bool {
        guard wedge == .none else { return false }
        wedge = .wedged
        return true
    }

    /// Another router saw the worker produce again: not wedged here either. A stall is about this
    /// router's own path to the worker and stays.
    public mutating func adoptAlive() -> Bool {
        guard wedge != .none else { return false }
        wedge = .none
        return true
    }

    /// Any successful contact (a probe, a load poll answered): not stalled.
    public mutating func contacted() -> Bool {
        defer { stalled = false }
        return stalled
    }

    /// A call to the worker got no answer at all, `silentMs` after the last contact.
    public mutating func transportFailed(silentMs: UInt64, rule: Rule) -> Bool {
        guard rule.stallMs > 0, silentMs >= rule.stallMs, !stalled else { return false }
        stalled = true
        return true
    }

    /// The periodic look at the worker: `inFlight` of the router's requests there now, silent
    /// (no head, token or answer) for `silentMs` since it last produced something or since it
    /// became busy, with `inFlightWhenSilenceBegan` then. Returns whether the verdict changed.
    public mutating func review(inFlight: Int, silentMs: UInt64, inFlightWhenSilenceBegan: Int, rule: Rule) -> Bool {
        guard rule.wedgeMs > 0 else { return false }
        let silent = inFlight > 0 && silentMs >= rule.wedgeMs
        switch wedge {
        case .none:
            guard silent, inFlight >= Self.wedgeDepth || inFlight > inFlightWhenSilenceBegan else { return false }
            wedge = .wedged
        case .wedged:
            guard inFlight == 0 else { return false }
            wedge = .probing
        case .probing:
            guard silent else { return false }
            wedge = .wedged
        }
        return true
    }
}
