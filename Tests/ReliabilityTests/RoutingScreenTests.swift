import Reliability
import Testing

/// What one routing decision leaves out before a policy chooses: workers not alive, then
/// overloaded ones; and what it does when that is everyone.
struct RoutingScreenTests {
    func load(waiting: [Int], usage: [Double?] = []) -> EngineLoad {
        EngineLoad(ranks: waiting.enumerated().map { i, w in
            EngineLoad.Rank(rank: i, running: 1, waiting: w, tokenUsage: i < usage.count ? usage[i] : nil)
        })
    }
    typealias C = RoutingScreen.Candidate

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
        #expect(RoutingScreen.decide([C(usable: true), C(usable: true)], shed: true) == RoutingScreen())
        #expect(RoutingScreen.decide([C(usable: true, overload: over), C(usable: true), C(usable: true, overload: over)], shed: true)
                == RoutingScreen(excluded: [0, 2]))
        // An unusable candidate (down, breaker open, just failed) does not count as one that can serve.
        #expect(RoutingScreen.decide([C(usable: true, overload: over), C(usable: false)], shed: true) == RoutingScreen(.shed))
        #expect(RoutingScreen.decide([C(usable: false, overload: over), C(usable: true)], shed: true) == RoutingScreen(),
                "an overloaded candidate that could not serve anyway needs no leaving out")
    }

    @Test func whenAllAreOverloadedTheLeastLoadedServesUnlessShedding() {
        let candidates = [C(usable: true, overload: load(waiting: [30])), C(usable: false, overload: load(waiting: [1])),
                          C(usable: true, overload: load(waiting: [9], usage: [0.9])), C(usable: true, overload: load(waiting: [9], usage: [0.85]))]
        #expect(RoutingScreen.decide(candidates, shed: false) == RoutingScreen(.overloadFallback(3)),
                "shortest queue, then the lowest KV usage; never an unusable one")
        #expect(RoutingScreen.decide(candidates, shed: true) == RoutingScreen(.shed))
        #expect(RoutingScreen.decide([C(usable: false)], shed: true) == RoutingScreen(), "no usable worker is for the caller to answer")
    }

    @Test func workersNotAliveAreLeftOutFirstAndNeverShed() {
        let over = load(waiting: [20])
        // Not alive and overloaded both go while one worker is neither.
        #expect(RoutingScreen.decide([C(usable: true, alive: false), C(usable: true, overload: over), C(usable: true)], shed: true)
                == RoutingScreen(excluded: [0, 1]))
        // The only alive one is overloaded: the wedged ones are still left out, and shedding applies to the alive.
        #expect(RoutingScreen.decide([C(usable: true, alive: false), C(usable: true, overload: over)], shed: true) == RoutingScreen(.shed))
        #expect(RoutingScreen.decide([C(usable: true, alive: false), C(usable: true, overload: over)], shed: false) == RoutingScreen(.overloadFallback(1)))
        // None alive: the one with the fewest of the router's requests in flight, never a 503 for a guess.
        #expect(RoutingScreen.decide([C(usable: true, alive: false, inFlight: 5), C(usable: true, alive: false, inFlight: 2),
                                      C(usable: false, alive: false, inFlight: 0)], shed: true) == RoutingScreen(.livenessFallback(1)))
    }
}
