import Foundation
import TestSupport
import Testing

/// Workers that answer wrongly (`smg-sim-worker --misbehave MODE`): garbage, an endless line, a
/// huge body, a content-length that lies, a trickle. Each may cost the request an error or a cut
/// response within `--request-timeout-secs`; none may cost the router its memory, its event
/// loop or its next request.
@Suite(.serialized) struct MisbehavingWorkerTests {
    static let timeoutSecs = 3
    static let hugeBytes = 64 << 20

    static func rssKB(_ r: RouterProcess) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(r.process.process.processIdentifier)/status", encoding: .utf8)) ?? ""
        return status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.flatMap { Int($0.split(separator: " ")[1]) } ?? .max
    }

    static func body(stream: Bool) -> [UInt8] {
        Array(#"{"model":"sim-model","stream":\#(stream),"messages":[{"role":"user","content":"hi"}]}"#.utf8)
    }

    @Test(arguments: ["garbage", "endless-line", "huge-body", "wrong-length", "trickle"])
    func aMisbehavingWorkerCostsOneRequestAndNeverTheRouter(mode: String) async throws {
        let w = try await SimWorkerProcess(name: mode, ["--misbehave", mode])
        let r = try await RouterProcess(["--worker-urls", w.url, "--policy", "round_robin", "--request-timeout-secs", String(Self.timeoutSecs),
                                         "--retry-max-retries", "1", "--retry-initial-backoff-ms", "1"])
        for stream in [false, true] {
            let c = try HTTPConnection(port: r.port)
            let started = ContinuousClock.now
            try c.send(HTTPConnection.requestBytes(method: "POST", path: "/v1/chat/completions", headers: [], body: Self.body(stream: stream)))
            let d = c.drain(timeout: .seconds(Self.timeoutSecs + 20)) { d in
                switch mode {
                case "garbage": return d.headText.contains("\r\n\r\n{") && d.headText.hasSuffix("}")
                case "huge-body": return d.count > Self.hugeBytes && (d.tailText.contains("total_tokens") || d.tailText.contains("[DONE]"))
                default: return false
                }
            }
            let took = ContinuousClock.now - started
            let what = "\(mode) stream=\(stream): \(d.count) bytes in \(took), closed=\(d.closed), head \(d.headText.prefix(120).debugDescription)"
            switch mode {
            case "garbage":
                #expect(d.headText.hasPrefix("HTTP/1.1 502"), "\(what)")
            case "huge-body":
                // A valid answer, however large, is relayed whole, at the client's pace.
                #expect(d.headText.hasPrefix("HTTP/1.1 200") && d.count > Self.hugeBytes, "\(what)")
            default:
                // The answer started (its head went out) and never finishes: cut at the deadline.
                #expect(d.closed && took < .seconds(Self.timeoutSecs + 5), "\(what)")
            }
        }
        #expect(Self.rssKB(r) < 300_000, "router RSS \(Self.rssKB(r)) kB after \(mode)")
        #expect(try r.request("GET", "/health").status == 200)
        #expect(try r.request("GET", "/v1/models").status == 200, "the router still answers")
    }

    /// The Responses API translates a worker's answer, so it holds it: an endless line or an
    /// answer past 32 MiB is refused at once (502, or `response.failed` on a stream), and the
    /// worker's answer is dropped then, not at the request timeout.
    @Test(arguments: ["endless-line", "huge-body"])
    func theResponsesAPIRefusesAnAnswerOutOfBounds(mode: String) async throws {
        let w = try await SimWorkerProcess(name: mode, ["--misbehave", mode])
        let r = try await RouterProcess(["--worker-urls", w.url, "--policy", "round_robin", "--request-timeout-secs", "60", "--disable-retries"])
        for stream in [false, true] {
            let c = try HTTPConnection(port: r.port)
            let started = ContinuousClock.now
            try c.send(HTTPConnection.requestBytes(method: "POST", path: "/v1/responses", headers: [],
                                                   body: Array(#"{"model":"sim-model","input":"hi","store":false,"stream":\#(stream)}"#.utf8)))
            let d = c.drain(timeout: .seconds(40)) { d in
                stream ? d.tailText.hasSuffix("0\r\n\r\n") : (d.headText.contains("\r\n\r\n{") && d.headText.hasSuffix("}"))
            }
            let took = ContinuousClock.now - started
            let what = "\(mode) stream=\(stream): \(d.count) bytes in \(took): \(d.headText.prefix(300).debugDescription) … \(d.tailText.suffix(300).debugDescription)"
            if stream {
                #expect(d.headText.hasPrefix("HTTP/1.1 200") && d.tailText.contains("response.failed") && d.tailText.contains("bytes"), "\(what)")
            } else {
                #expect(d.headText.hasPrefix("HTTP/1.1 502") && d.headText.contains("exceeds"), "\(what)")
            }
            #expect(took < .seconds(30), "refused at the bound, long before the 60 s timeout: \(what)")
            try await eventually(timeout: .seconds(5), "the worker's answer is dropped with the request") {
                (try r.request("GET", "/workers").json()["workers"] as? [[String: Any]])?.first?["load"] as? Int == 0
            }
        }
        #expect(Self.rssKB(r) < 400_000, "router RSS \(Self.rssKB(r)) kB")
    }

    /// PD with `return_logprob` holds the decode answer to merge the prefill's logprobs into it:
    /// past 64 MiB the request gets a 502 and the decode answer is dropped.
    @Test func aPDDecodeAnswerPastTheMergeBoundIsRefused() async throws {
        let prefill = try await SimWorkerProcess(name: "p", ["--role", "prefill", "--bootstrap-port", "0"])
        let decode = try await SimWorkerProcess(name: "d", ["--role", "decode", "--misbehave", "endless-line"])
        let r = try await PDTests.router(PDTests.Fleet(prefills: [prefill], decodes: [decode]), ["--request-timeout-secs", "60", "--disable-retries"])
        let c = try HTTPConnection(port: r.port)
        let started = ContinuousClock.now
        try c.send(HTTPConnection.requestBytes(method: "POST", path: "/generate", headers: [], body: Array(#"{"text":"hi","return_logprob":true}"#.utf8)))
        let d = c.drain(timeout: .seconds(40)) { d in d.headText.contains("\r\n\r\n{") && d.headText.hasSuffix("}") }
        #expect(d.headText.hasPrefix("HTTP/1.1 502") && d.headText.contains("exceeds"), "\(d.headText.prefix(300).debugDescription)")
        #expect(ContinuousClock.now - started < .seconds(30))
        #expect(Self.rssKB(r) < 400_000, "router RSS \(Self.rssKB(r)) kB")
        #expect(try r.request("GET", "/health").status == 200)
    }
}
