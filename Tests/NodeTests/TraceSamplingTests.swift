import NIOHTTP1
@testable import Node
import Testing

/// Which requests `--enable-trace` records, decided before any span is made.
struct TraceSamplingTests {
    static let trace = "4bf92f3577b34da6a3ce929d0e0e4736", span = "00f067aa0ba902b7"

    func headers(_ traceparent: String?) -> HTTPHeaders {
        var h = HTTPHeaders()
        if let traceparent { h.add(name: "traceparent", value: traceparent) }
        return h
    }

    @Test func aClientsValidTraceparentDecidesByItsSampledFlag() {
        #expect(RequestTrace.sampled(headers("00-\(Self.trace)-\(Self.span)-01"), ratio: 0, draw: 0.5))
        #expect(!RequestTrace.sampled(headers("00-\(Self.trace)-\(Self.span)-00"), ratio: 1, draw: 0))
        #expect(RequestTrace.sampled(headers("00-\(Self.trace)-\(Self.span)-03"), ratio: 0, draw: 0.5), "other flag bits are ignored")
    }

    @Test func anythingElseIsARootDrawnAtTheRatio() {
        let bad = [nil, "garbage", "00-\(Self.trace.uppercased())-\(Self.span)-01", "00-\(String(repeating: "0", count: 32))-\(Self.span)-01",
                   "00-\(Self.trace)-0000000000000000-01", "ff-\(Self.trace)-\(Self.span)-01", "00-\(Self.trace)-\(Self.span)-0x",
                   "00-\(Self.trace)-\(Self.span)-01-extra", String(repeating: "a", count: 4000)]
        for value in bad {
            #expect(RequestTrace.parentFlags(headers(value)) == nil, "\(value ?? "none")")
            #expect(RequestTrace.sampled(headers(value), ratio: 0.25, draw: 0.2))
            #expect(!RequestTrace.sampled(headers(value), ratio: 0.25, draw: 0.3))
        }
        var twice = headers("00-\(Self.trace)-\(Self.span)-01")
        twice.add(name: "traceparent", value: "00-\(Self.trace)-\(Self.span)-01")
        #expect(RequestTrace.parentFlags(twice) == nil, "a repeated traceparent is no trace context")
    }
}
