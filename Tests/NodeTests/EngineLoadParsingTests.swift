import NIOCore
@testable import Node
import Reliability
import Testing

/// What the router takes from a worker's `GET /v1/loads` answer, and what it refuses: a worker
/// that sends garbage is judged by the router's own counts, as one that sends nothing.
struct EngineLoadParsingTests {
    func parse(_ text: String) -> EngineLoad? { LoadMonitor.engineLoad(fromLoads: ByteBuffer(string: text)) }

    @Test func sglangsAnswerIsReadPerRank() throws {
        let load = try #require(parse("""
            {"timestamp":"2026-12-05T00:00:00+00:00","version":"0.5","dp_rank_count":2,
             "loads":[{"dp_rank":0,"num_running_reqs":3,"num_waiting_reqs":5,"num_total_reqs":8,"token_usage":0.5,"gen_throughput":812.5,"utilization":0.9},
                      {"dp_rank":1,"num_running_reqs":1,"num_waiting_reqs":4,"token_usage":0.75}],
             "aggregate":{"total_waiting_reqs":9}}
            """))
        #expect(load.ranks.map(\.rank) == [0, 1])
        #expect(load.running == 4 && load.waiting == 9)
        #expect(load.tokenUsage == 0.625)
        #expect(load.ranks[0].throughput == 812.5 && load.ranks[1].throughput == nil)
        // Fields left out count as 0 (older engines); dp_rank defaults to the position.
        let sparse = try #require(parse(#"{"loads":[{},{"num_waiting_reqs":2}]}"#))
        #expect(sparse.ranks.map(\.rank) == [0, 1] && sparse.waiting == 2 && sparse.tokenUsage == nil)
        // A huge count is taken as the bound, not trapped on.
        #expect(parse(#"{"loads":[{"num_waiting_reqs":1e300}]}"#)?.waiting == LoadMonitor.maxCount)
    }

    @Test func answersOfAnotherShapeAreRefused() {
        let refused = [
            "", "null", "[]", #"{"loads":[]}"#, #"{"loads":{}}"#, #"{"load":3}"#, #"{"loads":[3]}"#,
            #"{"loads":[{"num_waiting_reqs":-1}]}"#, #"{"loads":[{"num_waiting_reqs":1.5}]}"#, #"{"loads":[{"num_running_reqs":"2"}]}"#,
            #"{"loads":[{"token_usage":1.5}]}"#, #"{"loads":[{"token_usage":-0.1}]}"#, #"{"loads":[{"gen_throughput":-1}]}"#,
            #"{"loads":[{"dp_rank":-1}]}"#, #"{"loads":[{"num_waiting_reqs":1}"#,
            #"{"loads":["# + Array(repeating: "{}", count: LoadMonitor.maxRanks + 1).joined(separator: ",") + "]}",
        ]
        for text in refused { #expect(parse(text) == nil, "\(text.prefix(80))") }
        #expect(parse(#"{"loads":["# + Array(repeating: "{}", count: LoadMonitor.maxRanks).joined(separator: ",") + "]}")?.ranks.count == LoadMonitor.maxRanks)
    }
}
