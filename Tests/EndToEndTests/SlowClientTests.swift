import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Clients that hold sockets without finishing requests: cut at their deadline while everyone
/// else is served; connections over the limit refused.
@Suite(.serialized) struct SlowClientTests {
    /// True once the router closed `c` (a read sees end of stream or a reset).
    func isClosed(_ c: HTTPConnection) -> Bool {
        (try? c.readResponse()) == nil
    }

    @Test func slowlorisHeadsAreCutAtTheHeaderTimeoutWhileOthersAreServed() async throws {
        let w = try await SimWorkerProcess(name: "w")
        let timeout = 2
        let smg = try await RouterProcess(["--worker-urls", w.url, "--header-read-timeout-secs", String(timeout)])
        let started = ContinuousClock.now
        var lorises: [HTTPConnection] = []
        for _ in 0..<200 {
            let c = try HTTPConnection(port: smg.port, timeout: 0.05)
            try c.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-slow: ")
            lorises.append(c)
        }
        // Keep trickling a byte per connection until every one is closed; real clients go on.
        var open = Set(lorises.indices)
        let deadline = started + .seconds(timeout + 6)
        while !open.isEmpty, ContinuousClock.now < deadline {
            for i in open {
                if (try? lorises[i].send("a")) == nil { open.remove(i) }
            }
            #expect(try smg.chat("still served").status == 200)
            try await Task.sleep(for: .milliseconds(250))
        }
        let elapsed = ContinuousClock.now - started
        #expect(open.isEmpty, "\(open.count) slow heads still open after \(elapsed)")
        #expect(elapsed >= .seconds(timeout), "cut before the deadline: \(elapsed)")
        try await eventually(timeout: .seconds(5), "refusals are counted") {
            try smg.metric(#"smg_http_connections_refused_total{reason="header_timeout"}"#) == 200
        }
        #expect(smg.process.stderr.split(separator: "\n").filter { $0.contains("header_timeout") }.count == 1, "one log line, not one per connection")
    }

    @Test func stalledBodiesAndIdleConnectionsAreClosed() async throws {
        let w = try await InProcessWorker(name: "w")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--body-idle-timeout-secs", "1", "--keep-alive-timeout-secs", "2"])
        let stalled = try HTTPConnection(port: smg.port, timeout: 10)
        try stalled.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"messages\":")
        let idle = try HTTPConnection(port: smg.port, timeout: 10)
        #expect(try idle.request("GET", "/health").status == 200)
        let t0 = ContinuousClock.now
        #expect(isClosed(stalled))
        let bodyCut = ContinuousClock.now - t0
        #expect(bodyCut >= .seconds(1) && bodyCut < .seconds(5), "\(bodyCut)")
        #expect(isClosed(idle))
        let idleCut = ContinuousClock.now - t0
        #expect(idleCut >= .seconds(2) && idleCut < .seconds(6), "\(idleCut)")
        // A connection in use is not idle: requests every half second outlive the keep-alive timeout.
        let busy = try HTTPConnection(port: smg.port, timeout: 10)
        for _ in 0..<8 {
            #expect(try busy.request("GET", "/health").status == 200)
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(try smg.metric(#"smg_http_connections_refused_total{reason="body_timeout"}"#) == 1)
    }

    /// A body trickled a byte every half second never trips the idle timeout; the whole-body
    /// deadline cuts it.
    @Test func aTrickledBodyIsCutAtTheBodyDeadline() async throws {
        let smg = try await InProcessRouter(["--body-idle-timeout-secs", "30", "--body-timeout-secs", "2", "--api-key", "k"])
        let c = try HTTPConnection(port: smg.port, timeout: 10)
        try c.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\ncontent-length: 1000\r\n\r\n")
        let t0 = ContinuousClock.now
        var sent = 0
        while ContinuousClock.now - t0 < .seconds(8), (try? c.send("a")) != nil {
            sent += 1
            try await Task.sleep(for: .milliseconds(500))
        }
        let cut = ContinuousClock.now - t0
        #expect(cut >= .seconds(2) && cut < .seconds(6), "cut after \(cut), \(sent) bytes")
        try await eventually(timeout: .seconds(3), "counted") { try smg.metric(#"smg_http_connections_refused_total{reason="body_deadline"}"#) == 1 }
    }

    /// One client address cannot hold every connection; another address still gets in.
    @Test func oneClientAddressHoldsAtMostItsShareOfConnections() async throws {
        let smg = try await InProcessRouter(["--max-connections-per-client", "3"])
        let held = try (0..<3).map { _ in try HTTPConnection(port: smg.port, timeout: 5) }
        for c in held { #expect(try c.request("GET", "/health").status == 200) }
        let extra = try HTTPConnection(port: smg.port, timeout: 5)
        let refused = try? extra.readResponse()
        #expect(refused?.status == 503 && refused?.text.contains("--max-connections-per-client") == true, "\(refused?.text ?? "closed")")
        #expect(try HTTPConnection(port: smg.port, timeout: 5, from: "127.0.0.2").request("GET", "/health").status == 200, "another client")
        held[0].close()
        try await eventually(timeout: .seconds(5), "a freed slot is usable again") {
            try HTTPConnection(port: smg.port, timeout: 2).request("GET", "/health").status == 200
        }
        #expect(try smg.metric(#"smg_http_connections_refused_total{reason="per_client_limit"}"#) >= 1)
    }

    @Test func connectionsOverTheLimitAreTurnedAway() async throws {
        let smg = try await InProcessRouter(["--max-client-connections", "4"])
        let held = try (0..<4).map { _ in try HTTPConnection(port: smg.port, timeout: 5) }
        for c in held { #expect(try c.request("GET", "/health").status == 200) }
        let extra = try HTTPConnection(port: smg.port, timeout: 5)
        let refused = try? extra.readResponse()
        #expect(refused == nil || refused?.status == 503, "a 503 or a clean close")
        if let refused { #expect(refused.errorCode == "too_many_connections") }
        held[0].close()
        try await eventually(timeout: .seconds(5), "a freed slot is usable again") {
            try HTTPConnection(port: smg.port, timeout: 2).request("GET", "/health").status == 200
        }
        #expect(try smg.metric(#"smg_http_connections_refused_total{reason="max_connections"}"#) >= 1)
    }
}
