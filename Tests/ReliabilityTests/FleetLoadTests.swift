import Reliability
import Testing

/// Fleet-wide load: what a router tells the others about its in-flight requests, what it makes
/// of what they tell it, and when it speaks.
@Suite struct FleetLoadTests {
    static let report = LoadReport(entries: [
        .init(worker: "http://10.0.0.1:8000", inFlight: 3),
        .init(worker: "http://10.0.0.2:8000", inFlight: 7, ranks: [3, 4]),
    ])

    @Test func aReportSurvivesItsEncodingBusiestFirst() throws {
        let decoded = try #require(LoadReport.decode(Self.report.encoded()))
        #expect(decoded.entries.map(\.worker) == ["http://10.0.0.2:8000", "http://10.0.0.1:8000"])
        #expect(Set(decoded.entries.map(\.inFlight)) == [3, 7])
        #expect(decoded.entries.first?.ranks == [3, 4])
        #expect(LoadReport.decode(LoadReport(entries: []).encoded()) == LoadReport(entries: []))
    }

    @Test func aReportTooBigForADatagramKeepsItsBusiestWorkers() throws {
        let many = LoadReport(entries: (0..<5000).map { .init(worker: "http://10.0.\($0 / 250).\($0 % 250):8000", inFlight: $0) })
        let bytes = many.encoded()
        #expect(bytes.count <= 60_000)
        let decoded = try #require(LoadReport.decode(bytes))
        #expect(decoded.entries.count < 5000 && decoded.entries.count > 1000)
        #expect(decoded.entries.first?.inFlight == 4999, "the busiest workers are the ones kept")
    }

    @Test func anythingMalformedIsRefused() {
        let good = Self.report.encoded()
        #expect(LoadReport.decode(good + [0]) == nil, "trailing bytes")
        #expect(LoadReport.decode(Array(good.dropLast())) == nil, "cut short")
        #expect(LoadReport.decode([2] + good.dropFirst()) == nil, "another version")
        #expect(LoadReport.decode([]) == nil)
        // The same worker twice.
        let twice = LoadReport(entries: [.init(worker: "http://a", inFlight: 1), .init(worker: "http://a", inFlight: 2)]).encoded()
        #expect(LoadReport.decode(twice) == nil)
        // A count past the bound, an empty URL.
        var huge: [UInt8] = [1, 0, 1, 0, 1, UInt8(ascii: "a"), 0xff, 0xff, 0xff, 0xff, 0, 0]
        #expect(LoadReport.decode(huge) == nil)
        huge = [1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0]
        #expect(LoadReport.decode(huge) == nil)
        // More ranks than a worker may have.
        let ranks: [UInt8] = [1, 0, 1, 0, 1, UInt8(ascii: "a"), 0, 0, 0, 1, 0xff, 0xff]
        #expect(LoadReport.decode(ranks) == nil)
    }

    @Test func theBookSumsFreshReportsAndForgetsStaleOnesAndDeparted() {
        var book = FleetLoadBook()
        book.heard(from: "b", Self.report, nowMs: 1000)
        book.heard(from: "c", LoadReport(entries: [.init(worker: "http://10.0.0.2:8000", inFlight: 1, ranks: [1, 0, 5])]), nowMs: 2000)
        var totals = book.totals(nowMs: 2000)
        #expect(totals["http://10.0.0.1:8000"] == .init(inFlight: 3))
        #expect(totals["http://10.0.0.2:8000"] == .init(inFlight: 8, ranks: [4, 4, 5]))
        // A new report replaces the sender's last one: a worker it no longer names has 0 from it.
        book.heard(from: "b", LoadReport(entries: []), nowMs: 2100)
        totals = book.totals(nowMs: 2100)
        #expect(totals["http://10.0.0.1:8000"] == nil)
        #expect(totals["http://10.0.0.2:8000"] == .init(inFlight: 1, ranks: [1, 0, 5]))
        // Not renewed for 3 s: nothing.
        #expect(book.totals(nowMs: 5000).isEmpty)
        // A peer that left counts no more.
        book.heard(from: "c", Self.report, nowMs: 6000)
        book.retain { $0 != "c" }
        #expect(book.totals(nowMs: 6000).isEmpty)
    }

    @Test func theBookHasRoomForAMeshAndNoMore() {
        var config = FleetLoadBook.Config()
        config.maxPeers = 2
        var book = FleetLoadBook(config: config)
        let r1 = book.heard(from: "a", Self.report, nowMs: 0)
        #expect(r1)
        let r2 = book.heard(from: "b", Self.report, nowMs: 0)
        #expect(r2)
        let r3 = book.heard(from: "c", Self.report, nowMs: 10)
        #expect(!r3)
        let r4 = book.heard(from: "a", Self.report, nowMs: 10)
        #expect(r4, "a known peer is always heard")
        let r5 = book.heard(from: "c", Self.report, nowMs: 3100)
        #expect(r5, "room again once the others went stale")
    }

    @Test func aRouterSpeaksOnChangeRepeatsWhileBusyAndFallsQuietWhenIdle() {
        var s = LoadReportSchedule()
        let idle = LoadReport(entries: [])
        // Idle from the start: never a word.
        var spoke = false
        for t in stride(from: UInt64(0), to: 10_000, by: 50) where s.shouldSend(idle, nowMs: t) { spoke = true }
        #expect(!spoke)
        let busy = LoadReport(entries: [.init(worker: "http://a", inFlight: 2)])
        let r6 = s.shouldSend(busy, nowMs: 10_000)
        #expect(r6, "a change is told at once")
        let r7 = s.shouldSend(busy, nowMs: 10_050)
        #expect(!r7, "unchanged: not every period")
        let r8 = s.shouldSend(busy, nowMs: 11_000)
        #expect(r8, "but repeated each second while busy (a lost datagram is repaired)")
        let r9 = s.shouldSend(idle, nowMs: 11_050)
        #expect(r9, "back to zero is told at once")
        let r10 = s.shouldSend(idle, nowMs: 12_050)
        #expect(r10, "and repeated for a while")
        var later: [UInt64] = []
        for t in stride(from: UInt64(12_100), to: 30_000, by: 50) where s.shouldSend(idle, nowMs: t) { later.append(t) }
        #expect(later.count <= 2 && later.allSatisfy { $0 < 14_100 }, "then quiet: \(later)")
    }
}
