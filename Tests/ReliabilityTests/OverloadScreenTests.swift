import Reliability
import Testing

/// Worker overload protection's pure parts: when an engine's report makes a worker overloaded,
/// and what one routing decision does about overloaded candidates.
struct OverloadScreenTests {
    func load(waiting: [Int], usage: [Double?] = []) -> EngineLoad {
        EngineLoad(ranks: waiting.enumerated().map { i, w in
            EngineLoad.Rank(rank: i, running: 1, waiting: w, tokenUsage: i < usage.count ? usage[i] : nil)
        })
    }

    @Test func thresholdsAreInclusiveAndSumQueuesOverRanksAndAverageKVUsage() {
        let t = OverloadThresholds(waitingRequests: 8, tokenUsage: 0.8)
        #expect(!t.isOverloaded(load(waiting: [7])))
        #expect(t.isOverloaded(load(waiting: [8])))
        // Four ranks with a short queue each: the worker's queue is their sum.
        #expect(t.isOverloaded(load(waiting: [2, 2, 2, 2])))
        #expect(!t.isOverloaded(load(waiting: [2, 2, 2, 1])))
        // KV usage is the mean over the ranks that report one.
        #expect(t.isOverloaded(load(waiting: [0], usage: [0.8])))
        #expect(!t.isOverloaded(load(waiting: [0, 0], usage: [0.9, 0.6])))
        #expect(t.isOverloaded(load(waiting: [0, 0], usage: [0.9, nil])))
        #expect(!t.isOverloaded(load(waiting: [0], usage: [nil])), "no KV usage reported: judged by the queue alone")
    }

    @Test func overloadedCandidatesAreLeftOutWhileAnotherCanServe() {
        let over = load(waiting: [20])
        typealias C = OverloadScreen.Candidate
        #expect(OverloadScreen.decide([C(usable: true, overload: nil), C(usable: true, overload: nil)], shed: true) == .unaffected)
        #expect(OverloadScreen.decide([C(usable: true, overload: over), C(usable: true, overload: nil), C(usable: true, overload: over)], shed: true)
                == .exclude([0, 2]))
        // An unusable candidate (down, breaker open, just failed) does not count as one that can serve.
        #expect(OverloadScreen.decide([C(usable: true, overload: over), C(usable: false, overload: nil)], shed: true) == .shed)
        #expect(OverloadScreen.decide([C(usable: false, overload: over), C(usable: true, overload: nil)], shed: true) == .unaffected,
                "an overloaded candidate that could not serve anyway needs no leaving out")
    }

    @Test func whenAllAreOverloadedTheLeastLoadedServesUnlessShedding() {
        typealias C = OverloadScreen.Candidate
        let candidates = [C(usable: true, overload: load(waiting: [30])), C(usable: false, overload: load(waiting: [1])),
                          C(usable: true, overload: load(waiting: [9], usage: [0.9])), C(usable: true, overload: load(waiting: [9], usage: [0.85]))]
        #expect(OverloadScreen.decide(candidates, shed: false) == .fallback(3), "shortest queue, then the lowest KV usage; never an unusable one")
        #expect(OverloadScreen.decide(candidates, shed: true) == .shed)
        #expect(OverloadScreen.decide([C(usable: false, overload: nil)], shed: true) == .unaffected, "no usable worker is for the caller to answer")
    }
}
