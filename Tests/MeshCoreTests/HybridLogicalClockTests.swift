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

    @Test func theReplicatorCountsStampsAheadOfItsClock() {
        var a = Replicator(origin: 1), b = Replicator(origin: 2)
        let future = a.write("workers", "k", [1], physicalMs: 10_000_000)
        _ = b.apply([future], physicalMs: 1_000)
        #expect(b.stampsAhead == 1 && b.value("workers", "k") == [1], "applied as stamped, counted")
    }
}
