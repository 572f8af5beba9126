import Reliability
import Testing

/// When a worker that passes its probes is taken for wedged or stalled, and how it comes back.
struct LivenessTests {
    let rule = Liveness.Rule(wedgeMs: 3_000, stallMs: 2_000)

    @Test func aGrowingOrDeepSilentPileIsAWedgeAndOneLongPrefillIsNot() {
        var l = Liveness()
        // One request, silent for a minute: a long prefill, not a wedge.
        let changed1 = l.review(inFlight: 1, silentMs: 60_000, inFlightWhenSilenceBegan: 1, rule: rule)
        #expect(!changed1)
        // Grown since the silence began, but not silent long enough yet.
        let changed2 = l.review(inFlight: 2, silentMs: 2_999, inFlightWhenSilenceBegan: 1, rule: rule)
        #expect(!changed2)
        let changed3 = l.review(inFlight: 2, silentMs: 3_000, inFlightWhenSilenceBegan: 1, rule: rule)
        #expect(changed3)
        #expect(l.wedge == .wedged && l.reason == "wedge" && !l.admits(inFlight: 0))
        // Four deep is a wedge even without growth.
        var deep = Liveness()
        let changed4 = deep.review(inFlight: 4, silentMs: 3_000, inFlightWhenSilenceBegan: 4, rule: rule)
        #expect(changed4)
        var shallow = Liveness()
        let changed5 = shallow.review(inFlight: 3, silentMs: 30_000, inFlightWhenSilenceBegan: 3, rule: rule)
        #expect(!changed5)
        // An idle worker is never judged.
        var idle = Liveness()
        let changed6 = idle.review(inFlight: 0, silentMs: 1_000_000, inFlightWhenSilenceBegan: 0, rule: rule)
        #expect(!changed6)
    }

    @Test func aWedgedWorkerIsProbedOneRequestAtATimeOnceItsRequestsAreGone() {
        var l = Liveness()
        _ = l.review(inFlight: 5, silentMs: 3_000, inFlightWhenSilenceBegan: 1, rule: rule)
        // Still holding requests: stays out.
        let changed7 = l.review(inFlight: 3, silentMs: 9_000, inFlightWhenSilenceBegan: 1, rule: rule)
        #expect(!changed7)
        let changed8 = l.review(inFlight: 0, silentMs: 12_000, inFlightWhenSilenceBegan: 1, rule: rule)
        #expect(changed8)
        #expect(l.wedge == .probing && l.admits(inFlight: 0) && !l.admits(inFlight: 1))
        // The probe goes silent too: wedged again.
        let changed9 = l.review(inFlight: 1, silentMs: 3_000, inFlightWhenSilenceBegan: 1, rule: rule)
        #expect(changed9)
        #expect(l.wedge == .wedged)
        // A token ends it at once.
        let changed10 = l.progressed()
        #expect(changed10)
        #expect(l == Liveness() && l.admits(inFlight: 10))
        let changed11 = l.progressed()
        #expect(!changed11, "nothing to end")
    }

    @Test func aTransportFailureAfterSilenceStallsUntilTheFirstContact() {
        var l = Liveness()
        let changed12 = l.transportFailed(silentMs: 1_999, rule: rule)
        #expect(!changed12, "a failure while the worker was heard from recently: the breaker's business")
        let changed13 = l.transportFailed(silentMs: 2_000, rule: rule)
        #expect(changed13)
        #expect(l.stalled && l.reason == "stall" && !l.admits(inFlight: 0))
        let changed14 = l.transportFailed(silentMs: 9_000, rule: rule)
        #expect(!changed14, "already stalled")
        let changed15 = l.contacted()
        #expect(changed15)
        #expect(!l.stalled && l.admits(inFlight: 0))
    }

    @Test func zeroSwitchesEachRuleOff() {
        let off = Liveness.Rule(wedgeMs: 0, stallMs: 0)
        var l = Liveness()
        let changed16 = l.review(inFlight: 100, silentMs: .max, inFlightWhenSilenceBegan: 1, rule: off)
        #expect(!changed16)
        let changed17 = l.transportFailed(silentMs: .max, rule: off)
        #expect(!changed17)
        #expect(l.admits(inFlight: 100))
    }
}
