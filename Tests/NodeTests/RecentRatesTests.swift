@testable import Node
import Testing

/// The dashboard's rates: taken only when asked, over about ten seconds, nil until a second of
/// samples exists.
struct RecentRatesTests {
    @Test func ratesAreCountsOverTheWindowAndNilAtFirst() {
        let r = RecentRates()
        #expect(r.rates(nowMs: 1_000) == nil, "one sample is no rate")
        for _ in 0..<20 { r.answered(status: 200) }
        r.answered(status: 502)
        r.answered(status: 404)
        r.decided(cacheHit: true)
        r.decided(cacheHit: false)
        r.decided(cacheHit: true)
        r.decided(cacheHit: true)
        let after2s = r.rates(nowMs: 3_000)
        #expect(after2s == .init(requestsPerSecond: 11, serverErrorsPerSecond: 0.5, cacheHitRatio: 0.75, windowSeconds: 2))
        // Twelve seconds later with nothing new: the window's base is the newest sample at least
        // ten seconds old, so the rates fall to what happened since.
        #expect(r.rates(nowMs: 15_000)?.requestsPerSecond == 0)
        #expect(r.rates(nowMs: 15_000)?.cacheHitRatio == nil, "no decision in the window")
    }

    @Test func samplesLessThanASecondApartAreNotKeptAndOldOnesGo() {
        let r = RecentRates()
        for t in stride(from: UInt64(0), through: 600_000, by: 100) { _ = r.rates(nowMs: t) }
        r.answered(status: 200)
        let rates = r.rates(nowMs: 600_500)
        #expect(rates != nil && rates!.windowSeconds >= 10 && rates!.windowSeconds <= 11, "\(String(describing: rates))")
    }
}
