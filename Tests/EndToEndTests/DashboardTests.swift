import Foundation
import TestSupport
import Testing

/// `/dashboard`: a real headless browser (Debian's chromium) loads the page of one router of a
/// three-router cluster, which shows every router and the worker, runs without a script error or
/// a policy refusal, and shows a router that was killed as no longer alive.
@Suite(.serialized) struct DashboardTests {
    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// The page's DOM after its script ran (`--dump-dom` once the page's timers have had
    /// `budgetMs` of virtual time), and what the browser printed.
    static func render(_ url: String, budgetMs: Int = 3000) throws -> (dom: String, log: String) {
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("smg-chromium-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: profile) }
        let browser = Process()
        browser.executableURL = URL(fileURLWithPath: chromium!)
        browser.arguments = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions", "--user-data-dir=\(profile.path)",
                             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=\(budgetMs)", "--dump-dom", url]
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("smg-chromium-\(UUID().uuidString).out")
        let err = out.appendingPathExtension("err")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: out)
            try? FileManager.default.removeItem(at: err)
        }
        browser.standardOutput = try FileHandle(forWritingTo: out)
        browser.standardError = try FileHandle(forWritingTo: err)
        try browser.run()
        let deadline = Date().addingTimeInterval(60)
        while browser.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if browser.isRunning {
            browser.terminate()
            throw TestFailure("chromium did not finish within 60 s")
        }
        return (try String(contentsOf: out, encoding: .utf8), try String(contentsOf: err, encoding: .utf8))
    }

    /// `data-status` of each member row.
    static func memberStatuses(_ dom: String) -> [String: String] {
        var out: [String: String] = [:]
        for m in dom.matches(of: /data-member="([^"]+)" data-status="([^"]+)"/) { out[String(m.output.1)] = String(m.output.2) }
        return out
    }

    @Test(.enabled(if: chromium != nil || ProcessInfo.processInfo.environment["CI"] != nil, "chromium is not installed (./dev test installs it)"))
    func aBrowserShowsTheClusterAndARouterThatDied() async throws {
        #expect(Self.chromium != nil, "chromium is not installed (./dev test installs it)")
        guard Self.chromium != nil else { return }
        let ports = try (0..<3).map { _ in try freeLoopbackPort() }
        let w = try await SimWorkerProcess(name: "w")
        var routers: [RouterProcess] = []
        for (i, name) in ["a", "b", "c"].enumerated() {
            routers.append(try await RouterProcess(["--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1", "--mesh-port", String(ports[i]),
                                                    "--mesh-peer-urls"] + ports.indices.filter { $0 != i }.map { "127.0.0.1:\(ports[$0])" } + ["--worker-urls", w.url]))
        }
        let a = routers[0]
        func alive(_ r: RouterProcess) throws -> Int { try r.request("GET", "/ha/status").json()["alive"] as? Int ?? 0 }
        try await eventually(timeout: .seconds(10), "the mesh formed") { try routers.allSatisfy { try alive($0) == 3 } }
        for _ in 0..<5 { #expect(try a.chat("hello").status == 200) }

        let page = try Self.render("http://127.0.0.1:\(a.port)/dashboard")
        #expect(Self.memberStatuses(page.dom) == ["a": "alive", "b": "alive", "c": "alive"], "\(page.dom.suffix(2000))")
        #expect(page.dom.contains(#"data-worker="\#(w.url)" data-health="healthy""#))
        #expect(page.dom.contains(#"<span id="router">a</span>"#))
        #expect(!page.dom.contains("data-script-error"), "the page's script failed: \(page.dom.suffix(1000))")
        let consoleErrors = page.log.split(separator: "\n").filter { $0.contains("CONSOLE") && ($0.contains("Uncaught") || $0.contains("Refused") || $0.contains("rror")) }
        #expect(consoleErrors.isEmpty, "\(consoleErrors)")

        // c dies: a's page shows it suspect, then dead, within the mesh's detection time.
        routers[2].process.signal(SIGKILL)
        try await eventually(timeout: .seconds(15), "a sees c gone") { try alive(a) == 2 }
        let after = try Self.render("http://127.0.0.1:\(a.port)/dashboard")
        let statuses = Self.memberStatuses(after.dom)
        #expect(statuses["a"] == "alive" && statuses["b"] == "alive")
        #expect(statuses["c"] == "suspect" || statuses["c"] == "dead", "\(statuses)")
    }

    /// The page and its script are open and hold no data; the numbers need the read role.
    @Test func thePageIsSelfContainedAndItsNumbersNeedTheReadRole() async throws {
        let w = try await InProcessWorker(name: "w")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--control-plane-api-keys", "viewer:Dashboards:user:read-key", "ops:Operations:admin:admin-key"])
        let page = try smg.request("GET", "/dashboard")
        #expect(page.status == 200 && page.header("content-type")?.hasPrefix("text/html") == true)
        let policy = page.header("content-security-policy") ?? ""
        #expect(policy.contains("default-src 'none'") && policy.contains("script-src 'self'") && policy.contains("connect-src 'self'"), "\(policy)")
        // Nothing is fetched from elsewhere: no absolute URL in the page or its script.
        let script = try smg.request("GET", "/dashboard.js")
        #expect(script.status == 200 && script.header("content-type")?.hasPrefix("text/javascript") == true)
        #expect(!page.text.contains("http://") && !page.text.contains("https://") && !script.text.contains("http://") && !script.text.contains("https://"))
        #expect(try smg.request("GET", "/dashboard/stats").status == 401)
        let stats = try smg.request("GET", "/dashboard/stats", headers: [("authorization", "Bearer read-key")])
        #expect(stats.status == 200)
        let json = try stats.json()
        #expect(json["mesh"] as? Bool == false && (json["history"] as? [String: Any])?["backend"] as? String == "memory")
        #expect(try smg.request("POST", "/dashboard/stats").status == 405)
    }
}
