import MeshCore
import Testing

/// The clock's guards against a peer's clock: a remote stamp far in the future is followed only
/// to the drift bound, and a full logical counter moves to the next millisecond, never wraps.
@Suite struct HybridLogicalClockTests {
    @Test func aStampFromTheFarFutureDoesNotDragTheClockAlong() {
        var clock = HybridLogicalClock(node: 1, maxDriftMs: 1_000)
        let remote = HLCStamp(wallMs: UInt64.max, logical: UInt32.max, node: 2)
        #expect(clock.isAhead(remote, physicalMs: 10_000))
        clock.observe(remote, physicalMs: 10_000)
        #expect(clock.last.wallMs == 11_000, "followed to the drift bound: \(clock.last)")
        // Once physical time passes the bound, local stamps follow physical time again.
        #expect(clock.now(physicalMs: 12_000) == HLCStamp(wallMs: 12_000, logical: 0, node: 1))
        // Within the bound the clock follows the remote as a hybrid logical clock does.
        let near = HLCStamp(wallMs: 12_500, logical: 7, node: 2)
        #expect(!clock.isAhead(near, physicalMs: 12_000))
        clock.observe(near, physicalMs: 12_000)
        #expect(clock.last == HLCStamp(wallMs: 12_500, logical: 8, node: 1))
    }

    @Test func aFullLogicalCounterMovesToTheNextMillisecond() {
        var clock = HybridLogicalClock(node: 1)
        clock.observe(HLCStamp(wallMs: 500, logical: UInt32.max - 1, node: 2), physicalMs: 500)
        #expect(clock.last == HLCStamp(wallMs: 500, logical: UInt32.max, node: 1))
        var previous = clock.last
        for _ in 0..<3 {
            let next = clock.now(physicalMs: 400)
            #expect(next > previous, "\(next) after \(previous)")
            previous = next
        }
        #expect(previous == HLCStamp(wallMs: 501, logical: 2, node: 1), "the next millisecond, then counting again")
        // A remote at the end of everything: the stamp stays put rather than go backwards.
        var end = HybridLogicalClock(node: 1, maxDriftMs: UInt64.max)
        end.observe(HLCStamp(wallMs: UInt64.max, logical: UInt32.max, node: 2), physicalMs: 1)
        let after = end.now(physicalMs: 1)
        #expect(after >= HLCStamp(wallMs: UInt64.max, logical: UInt32.max, node: 0))
    }

    /// A write stamped beyond the drift bound (a peer whose clock jumped 3 hours ahead) is
    /// refused on every path, push, answer and full state, so it cannot win over the key's later
    /// writes; it stays wanted, and is taken once real time comes within the bound.
    @Test func aWriteStampedFarAheadIsRefusedUntilTimeCatchesUp() {
        let hours3: UInt64 = 3 * 3_600_000, now: UInt64 = 1_000_000_000
        var ahead = Replicator(origin: 1), good = Replicator(origin: 3)
        let future = ahead.write("sessions", "k", [1], physicalMs: now + hours3)

        for path in ["push", "answer", "state"] {
            var b = Replicator(origin: 2)
            switch path {
            case "push": _ = b.apply([future], physicalMs: now)
            case "answer": _ = b.absorb(ahead.missing(for: b.state.context), through: ahead.vector, from: "ahead", physicalMs: now)
            default: _ = b.join(ahead.state.allEntries, context: ahead.state.context, from: "ahead", physicalMs: now)
            }
            #expect(b.stampsAhead == 1 && b.value("sessions", "k") == nil, "\(path): refused, counted")
            #expect(!b.state.context.covers(future.dot), "\(path): still wanted")
            #expect(ahead.missing(for: b.state.context) == [future], "\(path): so the peer offers it again")

            // A later write of the key by a router with a right clock is not pinned under it.
            let later = good.write("sessions", "k", [3], physicalMs: now + 1)
            _ = b.apply([later], physicalMs: now + 2)
            #expect(b.value("sessions", "k") == [3], "\(path)")
            #expect(b.write("sessions", "k", [2], physicalMs: now + 3).stamp.wallMs < now + hours3, "\(path): its own clock was not dragged ahead")

            // Three hours on, within the bound: the write is taken and, being the newest, wins.
            let then = now + hours3 - 60_000
            _ = b.absorb(ahead.missing(for: b.state.context), through: ahead.vector, from: "ahead", physicalMs: then)
            #expect(b.value("sessions", "k") == [1] && b.state.context.covers(future.dot) && b.stampsAhead == 1, "\(path)")
        }
    }
}
