/// When periodic work comes due: work that may run late (on whichever tick comes first after
/// it is due, `MeshNode.nextDeadline`) keeps its rate by counting the next time from when it was
/// due, not from when it ran.
enum Cadence {
    /// The next time of work due at `due` that ran at `now`: one interval after `due`, or after
    /// `now` if that is already past (the first run, a long sleep).
    static func next(after due: UInt64, every interval: UInt64, now: UInt64) -> UInt64 {
        due &+ interval > now ? due &+ interval : now &+ interval
    }
}
