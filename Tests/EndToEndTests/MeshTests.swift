import Dispatch
import Foundation
import TestSupport
import Mesh
import MeshCore
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The mesh key file to remove at exit (a C `atexit` handler can reach a global, not a capture).
nonisolated(unsafe) private var meshKeyFileToRemove: String?

/// Several real `smg` processes forming a mesh on loopback.
@Suite(.serialized) struct MeshMembershipTests {
    struct Node {
        let name: String
        let meshPort: Int
        var router: RouterProcess?
    }

    /// One cluster key for the test run, removed when the test process exits.
    static let keyFile: URL = {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("smg-mesh-key-\(UUID().uuidString)")
        let p = try! TestProcess(Binaries.smg, ["mesh-keygen"], name: "keygen")
        p.process.waitUntilExit()
        _ = FileManager.default.createFile(atPath: url.path, contents: Data(p.stdout.utf8), attributes: [.posixPermissions: 0o600])
        meshKeyFileToRemove = url.path
        atexit { if let path = meshKeyFileToRemove { unlink(path) } }
        return url
    }()

    func start(_ name: String, port: Int, peers: [Int], keyFile: URL = MeshMembershipTests.keyFile) async throws -> RouterProcess {
        try await RouterProcess(["--policy", "round_robin", "--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1", "--mesh-port", String(port),
                                 "--mesh-key-file", keyFile.path, "--mesh-peer-urls"] + peers.map { "127.0.0.1:\($0)" })
    }

    /// Two sealed routers a and b meshed with each other over worker `w`, each with its own
    /// extra flags; returned once the mesh formed.
    func meshedPair(over w: SimWorkerProcess, _ extra: [[String]]) async throws -> (RouterProcess, RouterProcess) {
        let ports = try (0..<2).map { _ in try freeLoopbackPort() }
        var routers: [RouterProcess] = []
        for (i, name) in ["a", "b"].enumerated() {
            routers.append(try await RouterProcess(["--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1", "--mesh-port", String(ports[i]),
                                                   "--mesh-key-file", Self.keyFile.path, "--mesh-peer-urls", "127.0.0.1:\(ports[1 - i])",
                                                   "--worker-urls", w.url] + extra[i]))
        }
        let (a, b) = (routers[0], routers[1])
        try await eventually(timeout: .seconds(10), "the mesh formed") { try view(a).count == 1 && view(b).count == 1 }
        return (a, b)
    }

    /// Whether a router sees its first worker healthy.
    func firstWorkerIsHealthy(_ r: RouterProcess) throws -> Bool {
        (try r.request("GET", "/workers").json()["workers"] as? [[String: Any]])?.first?["is_healthy"] as? Bool ?? false
    }

    func view(_ r: RouterProcess) throws -> [String: String] {
        let status = try r.request("GET", "/ha/status").json()
        var out: [String: String] = [:]
        for m in status["members"] as? [[String: Any]] ?? [] { out[m["name"] as? String ?? "?"] = m["status"] as? String }
        return out
    }

    @Test func threeRoutersJoinInAnyOrderDetectAKillAndTakeBackARestart() async throws {
        let ports = try (0..<3).map { _ in try freeLoopbackPort() }
        // C first, although its only peer (A) is not up yet: it keeps trying.
        var c: RouterProcess? = try await start("c", port: ports[2], peers: [ports[0]])
        let b = try await start("b", port: ports[1], peers: [ports[0]])
        let a = try await start("a", port: ports[0], peers: [ports[1], ports[2]])
        try await eventually(timeout: .seconds(10), "all three see each other alive") {
            try view(a) == ["b": "alive", "c": "alive"] && view(b) == ["a": "alive", "c": "alive"] && view(c!) == ["a": "alive", "b": "alive"]
        }
        let status = try a.request("GET", "/ha/status").json()
        #expect(status["name"] as? String == "a")
        #expect(((status["traffic"] as? [String: Any])?["udp_in"] as? Int ?? 0) > 0)

        // kill -9: the others notice within 3 s.
        c!.process.signal(SIGKILL)
        let killed = ContinuousClock.now
        try await eventually(timeout: .seconds(6), "a and b see c dead") { try view(a)["c"] == "dead" && view(b)["c"] == "dead" }
        let detection = ContinuousClock.now - killed
        #expect(detection < .seconds(3), "detected after \(detection)")

        // Restarted under the same name: back within 5 s.
        c = nil
        let restarted = ContinuousClock.now
        c = try await start("c", port: ports[2], peers: [ports[0]])
        try await eventually(timeout: .seconds(8), "c is alive again everywhere") { try view(a)["c"] == "alive" && view(b)["c"] == "alive" }
        #expect(ContinuousClock.now - restarted < .seconds(5))

        // SIGTERM: a graceful leave, seen at once.
        c!.process.signal(SIGTERM)
        try await eventually(timeout: .seconds(2), "c's leave is seen") { try view(a)["c"] == "left" && view(b)["c"] == "left" }
    }

    @Test func aWorkerAddedOnOneRouterIsRoutedToByTheOthers() async throws {
        let ports = try (0..<3).map { _ in try freeLoopbackPort() }
        let w1 = try await SimWorkerProcess(name: "w1")
        let w2 = try await SimWorkerProcess(name: "w2")
        // Each router starts with its own worker; the mesh makes it the union.
        let a = try await start("a", port: ports[0], peers: [ports[1], ports[2]])
        let b = try await RouterProcess(["--enable-mesh", "--mesh-server-name", "b", "--mesh-host", "127.0.0.1", "--mesh-port", String(ports[1]),
                                         "--mesh-key-file", Self.keyFile.path, "--mesh-peer-urls", "127.0.0.1:\(ports[0])", "--worker-urls", w1.url])
        let c = try await start("c", port: ports[2], peers: [ports[0]])
        try await eventually(timeout: .seconds(10), "the mesh formed") { try view(a).count == 2 && view(b).count == 2 && view(c).count == 2 }
        func workers(_ r: RouterProcess) throws -> Set<String> {
            Set((try r.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []).compactMap { $0["url"] as? String })
        }
        try await eventually(timeout: .seconds(5), "b's start-up worker reached a and c") { try workers(a) == [w1.url] && workers(c) == [w1.url] }

        // Added through a: b and c route to it within a second.
        #expect(try a.request("POST", "/workers", body: #"{"url":"\#(w2.url)"}"#).status == 202)
        let added = ContinuousClock.now
        try await eventually(timeout: .seconds(3), "b and c know w2") { try workers(b).contains(w2.url) && workers(c).contains(w2.url) }
        #expect(ContinuousClock.now - added < .seconds(1), "replicated in \(ContinuousClock.now - added)")
        try await waitForModels(c, count: 2)
        let served = Set(try (0..<4).map { _ in try c.chat("x").header("x-sim-worker") ?? "" })
        #expect(served.contains("w2"), "c routes to the worker added on a: \(served)")

        // Removed through b: gone everywhere.
        #expect(try b.request("POST", "/remove_worker?url=\(w1.url)").status == 200)
        try await eventually(timeout: .seconds(3), "w1 is gone from a and c") { try workers(a) == [w2.url] && workers(c) == [w2.url] }
        let status = try a.request("GET", "/ha/status").json()
        #expect(((status["stores"] as? [String: Any])?["workers"] as? [String: Any])?["entries"] as? Int == 1)
    }

    @Test func threeRoutersInAlternationKeepTheCacheHitRatioOfOne() async throws {
        func sims() async throws -> [SimWorkerProcess] {
            var out: [SimWorkerProcess] = []
            for i in 0..<4 { out.append(try await SimWorkerProcess(name: "w\(i)", ["--output-tokens", "12", "--cache-capacity-blocks", "200000"])) }
            return out
        }
        // One router alone: the reference.
        let soloWorkers = try await sims()
        let solo = try await RouterProcess(["--worker-urls"] + soloWorkers.map(\.url))
        try await waitForModels(solo, count: 4)
        let single = try CacheAwareRoutingTests.drive(.init(), routers: [solo])

        // Three meshed routers over fresh workers, every request to the next router in turn.
        let workers = try await sims()
        let ports = try (0..<3).map { _ in try freeLoopbackPort() }
        var routers: [RouterProcess] = []
        for (i, name) in ["a", "b", "c"].enumerated() {
            routers.append(try await RouterProcess(["--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1", "--mesh-port", String(ports[i]),
                                                   "--mesh-key-file", Self.keyFile.path, "--mesh-peer-urls"] + ports.filter { $0 != ports[i] }.map { "127.0.0.1:\($0)" }
                                                   + ["--worker-urls"] + workers.map(\.url)))
        }
        try await eventually(timeout: .seconds(10), "the mesh formed") { try routers.allSatisfy { try view($0).count == 2 } }
        for r in routers { try await waitForModels(r, count: 4) }
        let meshed = try CacheAwareRoutingTests.drive(.init(), routers: routers)
        let ratio = { (r: (cached: Int, prompt: Int)) in Double(r.cached) / Double(r.prompt) }
        #expect(ratio(meshed) >= 0.97 * ratio(single), "hit ratio: one router \(ratio(single)), three alternating \(ratio(meshed))")
        print("hit ratio: one router \(ratio(single)), three alternating meshed routers \(ratio(meshed))")
    }

    @Test func aWorkerRemovedWhileARouterWasCutOffIsGoneThereWhenItReturns() async throws {
        let ports = try (0..<3).map { _ in try freeLoopbackPort() }
        let w = try await SimWorkerProcess(name: "w")
        let a = try await start("a", port: ports[0], peers: [ports[1], ports[2]])
        let b = try await start("b", port: ports[1], peers: [ports[0], ports[2]])
        let c = try await start("c", port: ports[2], peers: [ports[0], ports[1]])
        try await eventually(timeout: .seconds(10), "the mesh formed") { try view(a).count == 2 && view(b).count == 2 && view(c).count == 2 }
        func workers(_ r: RouterProcess) throws -> [String] {
            (try r.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []).compactMap { $0["url"] as? String }
        }
        func tombstones(_ r: RouterProcess) throws -> Int {
            ((try r.request("GET", "/ha/status").json()["stores"] as? [String: Any])?["workers"] as? [String: Any])?["tombstones"] as? Int ?? -1
        }
        #expect(try a.request("POST", "/workers", body: #"{"url":"\#(w.url)"}"#).status == 202)
        try await eventually(timeout: .seconds(3), "every router knows w") { try workers(b) == [w.url] && workers(c) == [w.url] }
        // c is cut off (stopped: it sends and answers nothing) until a and b declare it dead
        // (3 s bound for a kill), then w is removed through a.
        c.process.signal(SIGSTOP)
        try await eventually(timeout: .seconds(6), "a and b declare c dead") { try view(a)["c"] == "dead" && view(b)["c"] == "dead" }
        #expect(try a.request("POST", "/remove_worker?url=\(w.url)").status == 200)
        try await eventually(timeout: .seconds(3), "b drops w") { try workers(b).isEmpty }
        // a and b have both seen the deletion and c is not live: the tombstone is collected
        // (a digest each way, one a second; 5 s for a loaded machine).
        try await eventually(timeout: .seconds(5), "a and b collect the tombstone") { try tombstones(a) == 0 && tombstones(b) == 0 }
        // c comes back still holding w: the full state it is sent on return removes it, and
        // nothing brings w back to a or b.
        c.process.signal(SIGCONT)
        try await eventually(timeout: .seconds(5), "c is alive again for a") { try view(a)["c"] == "alive" }
        try await eventually(timeout: .seconds(5), "c drops w") { try workers(c).isEmpty }
        for _ in 0..<3 {
            try await Task.sleep(for: .seconds(1))  // anti-entropy rounds: w must stay gone
            #expect(try workers(a).isEmpty && workers(b).isEmpty && workers(c).isEmpty)
        }
    }

    @Test func aWorkerOneRouterSeesDieIsTakenOutOfRotationByTheOthers() async throws {
        let w = try await SimWorkerProcess(name: "w")
        // a checks every second; b only every minute: without the mesh, b would go on sending
        // requests to a dead worker for up to a minute.
        let intervals = ["1", "60"]
        let (a, b) = try await meshedPair(over: w, [["--health-check-interval-secs", intervals[0], "--health-failure-threshold", "1"],
                                                    ["--health-check-interval-secs", intervals[1], "--health-failure-threshold", "1"]])
        let healthy = firstWorkerIsHealthy
        try await eventually(timeout: .seconds(10), "both see w healthy") { try healthy(a) && healthy(b) }
        w.process.signal(SIGKILL)
        // a's next check (within 1 s) fails; its verdict reaches b within milliseconds.
        try await eventually(timeout: .seconds(5), "a sees w unhealthy") { try !healthy(a) }
        try await eventually(timeout: .seconds(2), "b takes w out of rotation on a's word") { try !healthy(b) }
        #expect(b.process.stderr.contains("seen by another router"))
    }

    /// A router without health checks of its own used to keep another router's "unhealthy" for
    /// good. It now follows that router's "healthy" too, and the verdict expires after
    /// --cb-timeout-duration-secs if nobody says otherwise (the router that said it may be gone).
    @Test func aPeersUnhealthyVerdictEndsOnARouterWithoutHealthChecks() async throws {
        let w = try await SimWorkerProcess(name: "w")
        let own: [[String]] = [["--health-check-interval-secs", "1", "--health-failure-threshold", "1", "--health-check-timeout-secs", "1"],
                               ["--disable-health-check", "--cb-timeout-duration-secs", "6"]]
        defer { w.process.signal(SIGCONT) }
        let (a, b) = try await meshedPair(over: w, own)
        let healthy = firstWorkerIsHealthy
        try await eventually(timeout: .seconds(10), "a sees w healthy") { try healthy(a) && healthy(b) }
        // Frozen, w fails a's checks; b adopts the verdict, then lets it expire on its own.
        w.process.signal(SIGSTOP)
        try await eventually(timeout: .seconds(6), "a sees w unhealthy") { try !healthy(a) }
        try await eventually(timeout: .seconds(2), "b takes a's word") { try !healthy(b) }
        let adopted = ContinuousClock.now
        try await eventually(timeout: .seconds(6 + 4), "the verdict expires on b") { try healthy(b) }
        #expect(ContinuousClock.now - adopted > .seconds(4), "not before its time")
        #expect(try !healthy(a), "a still sees w down with its own checks")
        // w comes back: a's own checks see it.
        w.process.signal(SIGCONT)
        try await eventually(timeout: .seconds(10), "a sees w recover") { try healthy(a) }
        #expect(try healthy(b))
        // And a's "healthy" reaches b when b is holding a verdict: freeze, adopt, thaw.
        w.process.signal(SIGSTOP)
        try await eventually(timeout: .seconds(6), "b adopts a's verdict again") { try !healthy(b) }
        let readopted = ContinuousClock.now
        w.process.signal(SIGCONT)
        try await eventually(timeout: .seconds(4), "a's healthy reaches b") { try healthy(b) }
        #expect(ContinuousClock.now - readopted < .seconds(5), "before the verdict's 6 s expiry")
    }

    @Test func aRouterThatJoinsLateRoutesKnownConversationsToTheirWorkers() async throws {
        var sims: [SimWorkerProcess] = []
        for i in 0..<4 { sims.append(try await SimWorkerProcess(name: "w\(i)")) }
        let ports = try (0..<2).map { _ in try freeLoopbackPort() }
        func router(_ name: String, _ i: Int) async throws -> RouterProcess {
            try await RouterProcess(["--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1", "--mesh-port", String(ports[i]),
                                     "--mesh-key-file", Self.keyFile.path, "--mesh-peer-urls", "127.0.0.1:\(ports[1 - i])", "--worker-urls"] + sims.map(\.url))
        }
        let a = try await router("a", 0)
        try await waitForModels(a, count: 4)
        // 16 conversations placed through a while b does not exist yet.
        let prompts = (0..<16).map { i in "conversation \(i): " + String(repeating: "the same long shared context of conversation \(i), ", count: 12) }
        var homes: [String] = []
        for p in prompts { homes.append(try a.chat(p).header("x-sim-worker") ?? "?") }
        #expect(Set(homes).count > 1, "the conversations were spread over the workers: \(homes)")
        // Enough other prompts that the tree travels in many chunks (about 1 MB of prompt).
        for i in 0..<400 { _ = try a.chat("other prompt \(i) " + String(repeating: "filler text of prompt \(i). ", count: 100)) }
        func treeSize(_ r: RouterProcess) throws -> Double {
            try r.metrics().split(separator: "\n").filter { $0.hasPrefix("smg_policy_state_size") }.compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
        }
        let size = try treeSize(a)
        #expect(size > 1_000_000)
        // b starts, joins, and is streamed a's tree: it holds all of it before it routes anything.
        let b = try await router("b", 1)
        try await eventually(timeout: .seconds(10), "the mesh formed") { try view(a).count == 1 && view(b).count == 1 }
        try await waitForModels(b, count: 4)
        try await eventually(timeout: .seconds(10), "b holds a's whole tree") { try treeSize(b) == size }
        try await eventually(timeout: .seconds(5), "a logged the transfer") { a.process.stderr.contains("cache-aware trees sent to a joining router") }
        let sent = a.process.stderr.split(separator: "\n").first { $0.contains("cache-aware trees sent") } ?? ""
        let chunks = sent.split(separator: " ").first { $0.hasPrefix("chunks=") }.flatMap { Int($0.dropFirst(7)) } ?? 0
        #expect(chunks > 5, "the tree went in many chunks: \(sent)")
        // The next turn of each conversation, through b, goes where the conversation lives.
        var same = 0
        for (i, p) in prompts.enumerated() where try b.chat(p + " and the next turn").header("x-sim-worker") == homes[i] { same += 1 }
        #expect(same == prompts.count, "\(same) of \(prompts.count) conversations routed by b to the worker holding them")
    }

    @Test func aSessionKeepsItsWorkerThroughAnyRouterEvenWhenOneDies() async throws {
        var sims: [SimWorkerProcess] = []
        for i in 0..<4 { sims.append(try await SimWorkerProcess(name: "w\(i)")) }
        let ports = try (0..<3).map { _ in try freeLoopbackPort() }
        var routers: [RouterProcess] = []
        for (i, name) in ["a", "b", "c"].enumerated() {
            routers.append(try await RouterProcess(["--policy", "manual", "--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1",
                                                   "--mesh-port", String(ports[i]), "--mesh-key-file", Self.keyFile.path, "--mesh-peer-urls"]
                                                   + ports.filter { $0 != ports[i] }.map { "127.0.0.1:\($0)" } + ["--worker-urls"] + sims.map(\.url)))
        }
        try await eventually(timeout: .seconds(10), "the mesh formed") { try routers.allSatisfy { try view($0).count == 2 } }
        for r in routers { try await waitForModels(r, count: 4) }
        // 20 sessions placed through a.
        var homes: [String: String] = [:]
        for s in 0..<20 { homes["session-\(s)"] = try routers[0].chat("hi", headers: [("X-SMG-Routing-Key", "session-\(s)")]).header("x-sim-worker") }
        #expect(Set(homes.values).count > 1, "sessions were spread: \(homes)")
        // Through b and c, each keeps its worker.
        try await eventually(timeout: .seconds(3), "b and c know the assignments") {
            try homes.allSatisfy { key, home in try routers[1].chat("hi", headers: [("X-SMG-Routing-Key", key)]).header("x-sim-worker") == home }
        }
        for (key, home) in homes { #expect(try routers[2].chat("hi", headers: [("X-SMG-Routing-Key", key)]).header("x-sim-worker") == home) }
        // a dies; the sessions still keep their workers through b.
        routers[0].process.signal(SIGKILL)
        for (key, home) in homes { #expect(try routers[1].chat("hi", headers: [("X-SMG-Routing-Key", key)]).header("x-sim-worker") == home) }
    }

    @Test func replicatedSessionsExpireWhenIdleAndLongKeysReplicate() async throws {
        var sims: [SimWorkerProcess] = []
        for i in 0..<3 { sims.append(try await SimWorkerProcess(name: "w\(i)")) }
        let ports = try (0..<2).map { _ in try freeLoopbackPort() }
        let idleSecs = 4
        var routers: [RouterProcess] = []
        for (i, name) in ["a", "b"].enumerated() {
            routers.append(try await RouterProcess(["--policy", "manual", "--max-idle-secs", String(idleSecs), "--enable-mesh", "--mesh-server-name", name,
                                                   "--mesh-host", "127.0.0.1", "--mesh-port", String(ports[i]), "--mesh-key-file", Self.keyFile.path,
                                                   "--mesh-peer-urls", "127.0.0.1:\(ports[1 - i])", "--worker-urls"] + sims.map(\.url)))
        }
        let (a, b) = (routers[0], routers[1])
        try await eventually(timeout: .seconds(10), "the mesh formed") { try view(a).count == 1 && view(b).count == 1 }
        for r in routers { try await waitForModels(r, count: 3) }
        func sessions(_ r: RouterProcess) throws -> Int {
            ((try r.request("GET", "/ha/status").json()["stores"] as? [String: Any])?["sessions"] as? [String: Any])?["entries"] as? Int ?? -1
        }
        func fullStates(_ r: RouterProcess) throws -> Int {
            ((try r.request("GET", "/ha/status").json()["replication"] as? [String: Any])?["full_states_sent"] as? Int) ?? -1
        }
        // A 2,000-byte key of non-ASCII characters (as raw UTF-8 in the header) keeps its worker through b.
        let long = String(repeating: "セッション", count: 134)
        #expect(long.utf8.count >= 2000)
        let home = try a.chat("hi", headers: [("X-SMG-Routing-Key", long)]).header("x-sim-worker")
        for s in 0..<10 { _ = try a.chat("hi", headers: [("X-SMG-Routing-Key", "idle-\(s)")]) }
        try await eventually(timeout: .seconds(5), "b holds all 11 sessions") { try sessions(b) == 11 }
        #expect(try b.chat("hi", headers: [("X-SMG-Routing-Key", long)]).header("x-sim-worker") == home)
        let states = try fullStates(a) + fullStates(b)

        // One key stays in use through b; the others idle out on both routers.
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .seconds(idleSecs * 2 + 2) {
            #expect(try b.chat("hi", headers: [("X-SMG-Routing-Key", "busy")]).status == 200)
            try await Task.sleep(for: .milliseconds(300))
            if try sessions(a) == 1 && sessions(b) == 1 { break }
        }
        let (left, right) = (try sessions(a), try sessions(b))
        #expect(left == 1 && right == 1, "only the key in use is left: a \(left), b \(right)")
        #expect(try fullStates(a) + fullStates(b) <= states + 2, "anti-entropy is not stuck re-sending full states")
    }

    /// A breaker that opens on one router opens on the others, and closes on them when that
    /// router's probe gets through: the router that takes the VIP routes as the one that held it.
    @Test func breakersOpenAndCloseAcrossTheMesh() async throws {
        let w = try await SimWorkerProcess(name: "w")
        let flags = ["--policy", "round_robin", "--disable-retries", "--cb-failure-threshold", "3", "--cb-success-threshold", "1",
                     "--cb-timeout-duration-secs", "2"]
        let (a, b) = try await meshedPair(over: w, [flags, flags])
        func breaker(_ r: RouterProcess) throws -> String {
            (try r.request("GET", "/workers").json()["workers"] as? [[String: Any]])?.first?["circuit_breaker"] as? String ?? "?"
        }
        try await eventually(timeout: .seconds(15), "both see the worker healthy") { try firstWorkerIsHealthy(a) && firstWorkerIsHealthy(b) }
        try w.setFaults("failure_rate=1")
        for _ in 0..<3 { _ = try a.chat("x") }
        #expect(try breaker(a) == "open")
        try await eventually(timeout: .seconds(5), "b adopts a's opening") { try breaker(b) == "open" }
        #expect(try b.chat("x").status == 503, "b routes around the worker too, without a failure of its own")
        try w.setFaults("failure_rate=0")
        // After 2 s a's breaker lets a probe through; it succeeds and closes it, and b's with it.
        try await eventually(timeout: .seconds(10), "a's probe closes its breaker") { try a.chat("x").status == 200 && breaker(a) == "closed" }
        try await eventually(timeout: .seconds(5), "b closes with it") { try breaker(b) == "closed" }
        #expect(try b.metric(#"smg_worker_cb_transitions_total{worker="\#(w.url)",from="closed",to="open"}"#) == 1)
        #expect(try b.metric(#"smg_worker_cb_transitions_total{worker="\#(w.url)",from="open",to="closed"}"#) == 1)
        #expect(try b.chat("x").status == 200)
    }

    /// A worker one router takes for wedged (a silent pile of its requests) is left out by the
    /// other within a gossip round: the other sends it at most one request at a time (a probe)
    /// instead of half its traffic until a pile of its own shows the wedge.
    @Test func aWorkerWedgedForOneRouterIsLeftOutByTheOthers() async throws {
        let calm = try await SimWorkerProcess(name: "calm")
        let wedged = try await SimWorkerProcess(name: "wedged", ["--hang-rate", "1"])
        let ports = try (0..<2).map { _ in try freeLoopbackPort() }
        var routers: [RouterProcess] = []
        for (i, name) in ["a", "b"].enumerated() {
            routers.append(try await RouterProcess(["--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1", "--mesh-port", String(ports[i]),
                                                   "--mesh-key-file", Self.keyFile.path, "--mesh-peer-urls", "127.0.0.1:\(ports[1 - i])",
                                                   "--policy", "round_robin", "--worker-wedge-secs", "1", "--request-timeout-secs", "30",
                                                   "--worker-urls", calm.url, wedged.url]))
        }
        let (a, b) = (routers[0], routers[1])
        try await eventually(timeout: .seconds(10), "the mesh formed") { try view(a).count == 1 && view(b).count == 1 }
        try await waitForModels(a, count: 2)
        try await waitForModels(b, count: 2)
        func fire(_ n: Int, at r: RouterProcess) {
            for i in 0..<n { Thread { _ = try? r.chat("fired \(i)") }.start() }
        }
        fire(8, at: a)  // half of them pile up on the wedged worker
        let veto = #"smg_worker_stalled{worker="\#(wedged.url)",reason="wedge"}"#
        try await eventually(timeout: .seconds(1 + 1 + 5), "a takes it for wedged") { try a.metric(veto) == 1 }
        try await eventually(timeout: .seconds(5), "b adopts a's verdict") { try b.metric(veto) == 1 }
        let (wedgedBefore, calmBefore) = (try wedged.stats()["requests"] ?? 0, try calm.stats()["requests"] ?? 0)
        fire(8, at: b)
        try await eventually(timeout: .seconds(10), "b's requests are served") { try (calm.stats()["requests"] ?? 0) >= calmBefore + 7 }
        #expect(try (wedged.stats()["requests"] ?? 0) - wedgedBefore <= 1, "b sent the wedged worker one probe at most, not half of its requests")
    }

    @Test func aRateLimitIsAClusterWideBudget() async throws {
        let w = try await SimWorkerProcess(name: "w")
        let ports = try (0..<3).map { _ in try freeLoopbackPort() }
        var routers: [RouterProcess] = []
        for (i, name) in ["a", "b", "c"].enumerated() {
            routers.append(try await RouterProcess(["--policy", "round_robin", "--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1",
                                                   "--mesh-port", String(ports[i]), "--mesh-key-file", Self.keyFile.path, "--mesh-peer-urls"]
                                                   + ports.filter { $0 != ports[i] }.map { "127.0.0.1:\($0)" }
                                                   + ["--worker-urls", w.url, "--rate-limit-tokens-per-second", "30", "--queue-size", "0"]))
        }
        try await eventually(timeout: .seconds(10), "the mesh formed") { try routers.allSatisfy { try view($0).count == 2 } }
        try await eventually(timeout: .seconds(5), "every router took its share") {
            routers.allSatisfy { $0.process.stderr.contains("routers=3") }
        }
        // From idle (each bucket holding its stored burst), all three at once for 6 s: the
        // burst is a cluster budget too, so the cluster stays within 1.1 R over the 6 s.
        @Sendable func hammer(_ r: RouterProcess, for duration: Duration) -> Int {
            var ok = 0
            let start = ContinuousClock.now
            while ContinuousClock.now - start < duration { if (try? r.chat("x").status) == 200 { ok += 1 } }
            return ok
        }
        try await Task.sleep(for: .seconds(1))  // the buckets fill (a quarter second of each share)
        let admitted = ResultBox(count: 3)
        let group = DispatchGroup()
        for (i, r) in routers.enumerated() {
            group.enter()
            let router = UnsafeTransfer(r)
            Thread.detachNewThread {
                admitted.set(i, (hammer(router.value, for: .seconds(6)), 0))
                group.leave()
            }
        }
        group.wait()
        let total = admitted.values.reduce(0) { $0 + $1.status }
        print("cluster rate limit 30/s over 3 routers: admitted \(total) in 6 s (\(admitted.values.map(\.status)))")
        #expect(total <= Int(1.1 * 30 * 6), "the cluster admitted \(total) in 6 s, stored bursts included: \(admitted.values.map(\.status))")
        #expect(total >= Int(0.85 * 30 * 6), "but it did admit about its budget: \(total)")

        // All traffic on one router (an active/backup VIP): its share follows the demand, so it
        // admits about the whole budget, not a third of it.
        _ = hammer(routers[0], for: .seconds(2))  // the demand estimate and the gossip catch up
        let alone = hammer(routers[0], for: .seconds(6))
        print("cluster rate limit 30/s, all traffic on one router: admitted \(alone) in 6 s")
        #expect(alone >= Int(0.9 * 30 * 6), "one router with all the traffic admits about the whole budget: \(alone) in 6 s (a static third would be 60)")
        #expect(alone <= Int(1.1 * 30 * 6))
    }

    /// Fleet-wide load: routers taking requests in turn spill a hot prefix at the load one
    /// router spills it at. Four workers, one shared system prompt, 24 clients in a closed loop
    /// (each request about 1 s), cache-aware with an absolute balance threshold of 6: the hot
    /// worker's peak in flight, as the worker itself counts it. Without the routers telling each
    /// other their loads each saw about a third of it and the peak was 21 behind three routers
    /// against 7 behind one.
    @Test func aHotPrefixSpillsAtTheSameLoadBehindThreeRoutersAsBehindOne() async throws {
        let flags = ["--policy", "cache_aware", "--balance-abs-threshold", "6", "--cache-threshold", "0.3"]
        func workers() async throws -> [SimWorkerProcess] {
            var out: [SimWorkerProcess] = []
            for i in 0..<4 { out.append(try await SimWorkerProcess(name: "w\(i)", ["--ttft-ms", "1000"])) }
            return out
        }
        func hotPeak(_ ws: [SimWorkerProcess]) throws -> Int { try ws.map { try $0.stats()["peak_active"] ?? 0 }.max() ?? 0 }
        /// 24 clients for `seconds`, client k's n-th request to router (k + n) % routers.
        @Sendable func load(_ ports: [Int], seconds: Double) {
            let system = String(repeating: "You are a careful assistant who answers briefly. ", count: 6)
            let group = DispatchGroup()
            for k in 0..<24 {
                group.enter()
                Thread.detachNewThread {
                    let end = Date().addingTimeInterval(seconds)
                    // Clients arrive over about a second, not all in the same millisecond.
                    usleep(UInt32(k) * 40_000)
                    var n = 0
                    while Date() < end {
                        let body = #"{"messages":[{"role":"system","content":"\#(system)"},{"role":"user","content":"client \#(k) question \#(n)"}]}"#
                        _ = try? HTTPClient.request(port: ports[(k + n) % ports.count], method: "POST", path: "/v1/chat/completions", body: Array(body.utf8))
                        n += 1
                    }
                    group.leave()
                }
            }
            group.wait()
        }

        let solo = try await workers()
        let one = try await RouterProcess(flags + ["--worker-urls"] + solo.map(\.url))
        load([one.port], seconds: 5)
        let peakOne = try hotPeak(solo)

        let fleet = try await workers()
        let ports = try (0..<3).map { _ in try freeLoopbackPort() }
        var routers: [RouterProcess] = []
        for (i, name) in ["a", "b", "c"].enumerated() {
            routers.append(try await RouterProcess(flags + ["--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1",
                                                           "--mesh-port", String(ports[i]), "--mesh-key-file", Self.keyFile.path, "--mesh-peer-urls"]
                                                   + ports.filter { $0 != ports[i] }.map { "127.0.0.1:\($0)" } + ["--worker-urls"] + fleet.map(\.url)))
        }
        try await eventually(timeout: .seconds(10), "the mesh formed") { try routers.allSatisfy { try view($0).count == 2 } }
        // While requests are in flight, every router shows the whole fleet's load on a worker.
        let fleetPorts = routers.map(\.port)
        let probe = Thread { load(fleetPorts, seconds: 5) }
        probe.start()
        var sawFleetLoad = false
        let until = ContinuousClock.now + .seconds(4)
        while ContinuousClock.now < until, !sawFleetLoad {
            try await Task.sleep(for: .milliseconds(200))
            let shown = try routers[0].request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
            sawFleetLoad = shown.contains { ($0["load"] as? Int ?? 0) > ($0["router_load"] as? Int ?? 0) }
        }
        while !probe.isFinished { try await Task.sleep(for: .milliseconds(50)) }
        let peakThree = try hotPeak(fleet)
        print("hot worker's peak in flight: \(peakOne) behind one router, \(peakThree) behind three taking requests in turn")
        #expect(sawFleetLoad, "GET /workers shows the other routers' requests in a worker's load")
        #expect(Double(peakThree) <= 1.25 * Double(peakOne), "\(peakThree) behind three routers against \(peakOne) behind one")
        #expect(peakOne >= 6, "the hot prefix did pile up before spilling: \(peakOne)")
    }

    @Test func aPacketSealedWithAnotherKeyIsRejectedAndCounted() async throws {
        let port = try freeLoopbackPort()
        let a = try await start("solo", port: port, peers: [])
        // Another cluster's router sends to our mesh port.
        let otherKey = FileManager.default.temporaryDirectory.appendingPathComponent("smg-mesh-other-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: otherKey) }
        let keygen = try TestProcess(Binaries.smg, ["mesh-keygen"], name: "keygen")
        keygen.process.waitUntilExit()
        _ = FileManager.default.createFile(atPath: otherKey.path, contents: Data(keygen.stdout.utf8), attributes: [.posixPermissions: 0o600])
        let intruder = try await start("intruder", port: try freeLoopbackPort(), peers: [port], keyFile: otherKey)
        try await eventually(timeout: .seconds(5), "the foreign packets are counted as unknown_key") {
            let traffic = try a.request("GET", "/ha/status").json()["traffic"] as? [String: Any]
            return ((traffic?["dropped"] as? [String: Int])?["unknown_key"] ?? 0) > 0
        }
        #expect(try view(a).isEmpty, "the intruder never joined")
        #expect(try a.metric(#"smg_mesh_dropped_packets{reason="unknown_key"}"#) > 0)
        #expect(try a.metric(#"smg_mesh_members{status="alive"}"#) == 1)
        #expect(try view(intruder).isEmpty)
        // Plain garbage too.
        try sendDatagram([UInt8](repeating: 0x41, count: 100), from: "127.0.0.1", to: port)
        try await eventually(timeout: .seconds(3), "garbage is counted") {
            let traffic = try a.request("GET", "/ha/status").json()["traffic"] as? [String: Any]
            return ((traffic?["dropped"] as? [String: Int])?["bad_version"] ?? 0) > 0
        }
    }

    @Test func keylessRoutersMeshUnsealedAndASealedOneRefusesThem() async throws {
        let ports = try (0..<3).map { _ in try freeLoopbackPort() }
        func keyless(_ name: String, _ i: Int, peers: [Int]) async throws -> RouterProcess {
            try await RouterProcess(["--policy", "round_robin", "--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1",
                                     "--mesh-port", String(ports[i]), "--mesh-peer-urls"] + peers.map { "127.0.0.1:\($0)" })
        }
        // The reference gateway's two-router example has no key: it starts, and says so.
        // a also names the port where a sealed router will run: it keeps knocking there, unsealed.
        let a = try await keyless("a", 0, peers: [ports[1], ports[2]])
        let b = try await keyless("b", 1, peers: [ports[0]])
        try await eventually(timeout: .seconds(10), "a and b mesh without a key") { try view(a)["b"] == "alive" && view(b)["a"] == "alive" }
        #expect(a.process.stderr.contains("UNSEALED"))
        #expect(try a.request("GET", "/ha/status").json()["sealed"] as? Bool == false)
        #expect(try a.metric("smg_mesh_sealed") == 0)
        // A router with a key refuses their unsealed packets, and counts them.
        let sealed = try await start("sealed", port: ports[2], peers: [ports[0]])
        try await eventually(timeout: .seconds(5), "unsealed packets are counted") {
            let traffic = try sealed.request("GET", "/ha/status").json()["traffic"] as? [String: Any]
            return ((traffic?["dropped"] as? [String: Int])?["unsealed"] ?? 0) > 0
        }
        #expect(try view(sealed).isEmpty && view(a)["sealed"] == nil, "no mixing of sealed and unsealed routers")
        #expect(try sealed.request("GET", "/ha/status").json()["sealed"] as? Bool == true)
    }

    /// Keyless mode used to apply an unsealed push from anyone: one datagram added a worker that
    /// then got users' prompts and the API key. Now a packet is taken only from the address of a
    /// router named in `--mesh-peer-urls` (or learned from them) and only when it comes from the
    /// address it claims; the same push from a peer's address is applied (so the packet is good).
    @Test func aKeylessMeshTakesPacketsOnlyFromItsPeersAddresses() async throws {
        let ports = try (0..<2).map { _ in try freeLoopbackPort() }
        func keyless(_ name: String, _ i: Int) async throws -> RouterProcess {
            try await RouterProcess(["--policy", "round_robin", "--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1",
                                     "--mesh-port", String(ports[i]), "--mesh-peer-urls", "127.0.0.1:\(ports[1 - i])"])
        }
        let a = try await keyless("a", 0)
        let b = try await keyless("b", 1)
        try await eventually(timeout: .seconds(10), "a and b mesh without a key") { try view(a)["b"] == "alive" && view(b)["a"] == "alive" }
        // Posing as b takes b's generation and a counter past b's own (the replay filter's rules).
        let bGeneration = try #require((try b.request("GET", "/ha/status").json()["generation"] as? NSNumber)?.uint64Value)
        var counter: UInt64 = 1 << 40
        func push(worker: String, claiming sender: String, from source: String) throws {
            counter += 1
            let entry = ReplicatedEntry(store: "workers", key: worker, value: Array(#"{"labels":{}}"#.utf8),
                                        stamp: HLCStamp(wallMs: UInt64(Date().timeIntervalSince1970 * 1000), logical: 0, node: 777), dot: Dot(origin: 777, seq: counter))
            let plain = WireCodec.encode(.init(sender: sender, generation: bGeneration, counter: counter, message: .node(.push([entry]))))
            try sendDatagram([Sealer.unsealedVersion] + plain, from: source, to: ports[0])
        }
        func listed(_ url: String) throws -> Bool { try a.request("GET", "/workers").text.contains(url) }
        func dropped() throws -> Int {
            let traffic = try a.request("GET", "/ha/status").json()["traffic"] as? [String: Any]
            return (traffic?["dropped"] as? [String: Int])?["unknown_sender"] ?? 0
        }
        // A stranger (another address, claiming itself), one claiming a peer's address from
        // elsewhere, and one on the peer's host claiming an address nobody told a about.
        try push(worker: "http://127.0.0.1:9991", claiming: "127.0.0.2:\(ports[1])", from: "127.0.0.2")
        try push(worker: "http://127.0.0.1:9992", claiming: "127.0.0.1:\(ports[1])", from: "127.0.0.2")
        try push(worker: "http://127.0.0.1:9993", claiming: "127.0.0.1:1", from: "127.0.0.1")
        try await eventually(timeout: .seconds(5), "the three are dropped and counted") { try dropped() >= 3 }
        // From the peer's address, claiming the peer: applied, as b's own writes are.
        try push(worker: "http://127.0.0.1:9994", claiming: "127.0.0.1:\(ports[1])", from: "127.0.0.1")
        try await eventually(timeout: .seconds(5), "the peer's push is applied") { try listed("http://127.0.0.1:9994") }
        for port in 9991...9993 { #expect(try !listed("http://127.0.0.1:\(port)"), "port \(port)") }
        #expect(try a.metric(#"smg_mesh_dropped_packets{reason="unknown_sender"}"#) >= 3)
    }

    /// A keyless mesh would bypass every credential: with one configured, start-up refuses it
    /// and names the way to a key, unless --mesh-allow-unsealed accepts the risk.
    @Test func aKeylessMeshWithCredentialsIsRefusedUnlessAllowed() async throws {
        for credential in [["--api-key", "k"], ["--control-plane-api-keys", "a:ops:admin:secret"]] {
            let p = try TestProcess(Binaries.smg, ["--port", "0", "--prometheus-port", "0", "--enable-mesh", "--mesh-host", "127.0.0.1",
                                                   "--mesh-port", String(try freeLoopbackPort())] + credential, name: "smg")
            #expect(await p.waitForExit(timeout: .seconds(10)) == 2)
            #expect(p.stderr.contains("--mesh-key-file") && p.stderr.contains("smg mesh-keygen"), "\(credential): \(p.stderr)")
        }
        let allowed = try await RouterProcess(["--api-key", "k", "--enable-mesh", "--mesh-allow-unsealed", "--mesh-host", "127.0.0.1",
                                               "--mesh-port", String(try freeLoopbackPort())])
        #expect(try allowed.request("GET", "/health").status == 200)
    }

    /// 128 connections that send nothing used to hold every inbound mesh slot for minutes, also
    /// on a sealed mesh. Each must now prove the key (the sealed hello) within 5 s or is closed,
    /// and a router can join right after.
    @Test func silentConnectionsToTheMeshPortAreClosedAndPeersStillJoin() async throws {
        let ports = try (0..<2).map { _ in try freeLoopbackPort() }
        let a = try await start("a", port: ports[0], peers: [])
        var silent: [HTTPConnection] = []
        for _ in 0..<140 { silent.append(try HTTPConnection(port: ports[0], timeout: 1)) }
        let started = ContinuousClock.now
        for c in silent {
            let d = c.drain(timeout: .seconds(15))
            #expect(d.closed && d.count == 0, "closed without a byte")
        }
        #expect(ContinuousClock.now - started < .seconds(5 + 5), "within the 5 s hello deadline and a margin")
        let dropped = (try a.request("GET", "/ha/status").json()["traffic"] as? [String: Any])?["dropped"] as? [String: Int] ?? [:]
        #expect((dropped["no_hello"] ?? 0) + (dropped["connection_limit"] ?? 0) >= 140, "\(dropped)")
        let b = try await start("b", port: ports[1], peers: [ports[0]])
        try await eventually(timeout: .seconds(10), "b joins a") { try view(a)["b"] == "alive" && view(b)["a"] == "alive" }
    }

    /// A peer given by name is looked up on a background thread (getaddrinfo blocks; the event
    /// loops never wait for DNS) and the join goes out once it is known.
    @Test func aPeerGivenByNameIsResolvedOffTheEventLoops() async throws {
        let ports = try (0..<2).map { _ in try freeLoopbackPort() }
        let a = try await start("a", port: ports[0], peers: [])
        let b = try await RouterProcess(["--policy", "round_robin", "--enable-mesh", "--mesh-server-name", "b", "--mesh-host", "127.0.0.1",
                                         "--mesh-port", String(ports[1]), "--mesh-key-file", MeshMembershipTests.keyFile.path,
                                         "--mesh-peer-urls", "localhost:\(ports[0])"])
        try await eventually(timeout: .seconds(10), "b joins a through a name") { try view(a)["b"] == "alive" && view(b)["a"] == "alive" }
    }

    @Test func meshFlagsAreChecked() async throws {
        for (args, expected) in [(["--enable-mesh", "--mesh-key", "abc"], "64 hex"),
                                 (["--enable-mesh", "--mesh-key", String(repeating: "a", count: 64), "--mesh-peer-urls", "nohost"], "--mesh-peer-urls")] {
            let p = try TestProcess(Binaries.smg, args, name: "smg")
            #expect(await p.waitForExit(timeout: .seconds(10)) == 2)
            #expect(p.stderr.contains(expected), "\(args): \(p.stderr)")
        }
        let off = try await RouterProcess([])
        #expect(try off.request("GET", "/ha/status").status == 404)
    }
}

/// Sends one UDP datagram from `source` (an address of this host: any of 127.0.0.0/8) to a
/// loopback port, as a stranger on another address would.
func sendDatagram(_ bytes: [UInt8], from source: String, to port: Int) throws {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EBADF) }
    defer { close(fd) }
    var local = sockaddr_in()
    local.sin_family = sa_family_t(AF_INET)
    local.sin_addr.s_addr = inet_addr(source)
    let bound = withUnsafePointer(to: &local) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw POSIXError(.EADDRNOTAVAIL) }
    var remote = sockaddr_in()
    remote.sin_family = sa_family_t(AF_INET)
    remote.sin_port = in_port_t(UInt16(port).bigEndian)
    remote.sin_addr.s_addr = inet_addr("127.0.0.1")
    let sent = withUnsafePointer(to: &remote) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, bytes, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard sent == bytes.count else { throw POSIXError(.EIO) }
}
