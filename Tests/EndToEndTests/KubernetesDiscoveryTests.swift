import Foundation
import Testing
import TestSupport

/// `--service-discovery` against the API server double (TLS, bearer tokens, list and watch as
/// the API does them), with the real `smg` binary: pods become workers while they serve and stop
/// being workers when they stop; broken and expired watches lose no change; PD pods carry their
/// bootstrap port; routers find each other by their pods; a rotated token is read again.
///
/// Each pod has its own loopback address (127.0.0.x), all on one port, as pods share the
/// `--service-discovery-port`. Waits allow a few seconds: a change reaches the router in
/// milliseconds, a re-watch after a failure within a 0.5 s backoff.
@Suite(.serialized) struct KubernetesDiscoveryTests {
    static let python = ProcessInfo.processInfo.environment["SMG_TEST_PYTHON"].flatMap { FileManager.default.isExecutableFile(atPath: $0) ? $0 : nil }

    /// The workers a router lists: url → the worker's JSON.
    static func workers(_ smg: some RouterUnderTest) throws -> [String: [String: Any]] {
        let list = try smg.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
        return Dictionary(uniqueKeysWithValues: list.map { ($0["url"] as? String ?? "", $0) })
    }

    /// Which worker answered each of `n` chats.
    static func answered(_ smg: some RouterUnderTest, _ n: Int) throws -> [String] {
        try (0..<n).map { _ in
            let r = try smg.chat("hello")
            guard r.status == 200 else { throw TestFailure("chat answered \(r.status): \(String(decoding: r.body, as: UTF8.self))") }
            return r.header("x-sim-worker") ?? "?"
        }
    }

    /// Simulated workers as pods: the first on 127.0.0.2, the next on .3 and so on, all on the
    /// first one's port (pods share `--service-discovery-port`).
    static func podWorkers(_ names: [String]) async throws -> [InProcessWorker] {
        var workers: [InProcessWorker] = []
        for (i, name) in names.enumerated() {
            workers.append(try await InProcessWorker(name: name, host: "127.0.0.\(i + 2)", port: workers.first?.port ?? 0))
        }
        return workers
    }

    static func metric(_ smg: some RouterUnderTest, _ name: String, _ labels: String) throws -> Double {
        let text = String(decoding: try HTTPClient.request(port: smg.metricsPort, method: "GET", path: "/metrics").body, as: UTF8.self)
        return text.split(separator: "\n").filter { $0.hasPrefix(name + "{") && $0.contains(labels) }
            .compactMap { Double($0.split(separator: " ").last ?? "") }.reduce(0, +)
    }

    @Test func podsAreWorkersWhileTheyServeAndNotAMomentLonger() async throws {
        let api = try await APIServerDouble()
        let pods = try await Self.podWorkers(["a", "b", "c"])
        let port = pods[0].port
        let fixed = try await InProcessWorker(name: "fixed")
        let (urlA, urlB) = ("http://127.0.0.2:\(port)", "http://127.0.0.3:\(port)")
        try api.put("a", labels: ["app": "sglang-worker", "model": "llama"], ip: "127.0.0.2",
                    annotations: ["smg.ai/kv-connector": "NixlConnector", "smg.ai/kv-engine-id": "engine-a"])
        try api.put("b", labels: ["app": "sglang-worker"], ip: "127.0.0.3", ready: false)
        try api.put("c", namespace: "elsewhere", labels: ["app": "sglang-worker"], ip: "127.0.0.4")
        try api.put("d", labels: ["app": "other"], ip: "127.0.0.4")
        let smg = try await RouterProcess([
            "--worker-urls", fixed.url, "--service-discovery", "--selector", "app=sglang-worker", "--service-discovery-namespace", "llm",
            "--service-discovery-port", "\(port)", "--policy", "round_robin", "--model-id-from", "label:model",
        ], environment: ["KUBECONFIG": try api.kubeconfig()])

        try await eventually(timeout: .seconds(10), "the Ready pod is a worker") { try Self.workers(smg).keys.sorted() == [fixed.url, urlA].sorted() }
        let listed = try Self.workers(smg)
        let labels = listed[urlA]?["labels"] as? [String: String] ?? [:]
        #expect(labels["smg.ai/discovery-provider"] == "kubernetes" && labels["smg.ai/discovery-id"] == "llm/a", "\(labels)")
        #expect(listed[urlA]?["model_id"] as? String == "llama", "--model-id-from label:model")
        #expect(labels["kv_connector"] == "NixlConnector" && labels["kv_engine_id"] == "engine-a", "the KV annotations: \(labels)")
        #expect((listed[fixed.url]?["labels"] as? [String: String])?["smg.ai/discovery-provider"] == nil)

        // NotReady → Ready: it joins; requests reach it. An annotation too long for a worker's
        // label is left out, not the pod.
        try api.put("b", labels: ["app": "sglang-worker"], ip: "127.0.0.3", annotations: ["smg.ai/kv-engine-id": String(repeating: "x", count: 300)])
        try await eventually(timeout: .seconds(10), "the pod that became Ready is a worker") { try Self.workers(smg)[urlB] != nil }
        #expect((try Self.workers(smg)[urlB]?["labels"] as? [String: String])?["kv_engine_id"] == nil)
        try await eventually(timeout: .seconds(10), "requests reach both pods") { Set(try Self.answered(smg, 6)).isSuperset(of: ["a", "b"]) }

        // Terminating (deletionTimestamp set, still Ready): out at once, and no request after.
        try api.terminate("b")
        try await eventually(timeout: .seconds(5), "a terminating pod is no worker") { try Self.workers(smg)[urlB] == nil }
        #expect(!(try Self.answered(smg, 12)).contains("b"), "a request went to a terminating pod")

        // Ready → NotReady, then deleted; a deleted pod's requests stop within the wait, not a
        // health interval later (health checks here run every 60 s).
        try api.put("a", labels: ["app": "sglang-worker", "model": "llama"], ip: "127.0.0.2", ready: false)
        try await eventually(timeout: .seconds(5), "a NotReady pod is no worker") { try Self.workers(smg)[urlA] == nil }
        try api.put("a", labels: ["app": "sglang-worker", "model": "llama"], ip: "127.0.0.2")
        try await eventually(timeout: .seconds(5), "Ready again") { try Self.workers(smg)[urlA] != nil }
        try api.delete("a")
        try await eventually(timeout: .seconds(5), "a deleted pod is no worker") { try Self.workers(smg)[urlA] == nil }
        #expect(Set(try Self.answered(smg, 8)) == ["fixed"], "only the --worker-urls worker is left")
        #expect(try Self.workers(smg).keys.sorted() == [fixed.url], "a pod of another namespace or label never became a worker")
        _ = pods
    }

    @Test func aBrokenWatchAndAnExpiredVersionLoseNoChange() async throws {
        let api = try await APIServerDouble()
        let pods = try await Self.podWorkers(["a", "b", "c"])
        let port = pods[0].port
        let url = { (host: String) in "http://\(host):\(port)" }
        try api.put("a", labels: ["app": "w"], ip: "127.0.0.2")
        let smg = try await RouterProcess(["--service-discovery", "--selector", "app=w", "--service-discovery-port", "\(port)"],
                                          environment: ["KUBECONFIG": try api.kubeconfig()])
        try await eventually(timeout: .seconds(10), "listed") { try Self.workers(smg).keys.sorted() == [url("127.0.0.2")] }
        try await eventually(timeout: .seconds(5), "the router watches") { try api.stats()["open_watches"] as? Int == 1 }

        // A broken watch: the change made while it is down arrives when it is back.
        #expect(try api.breakWatches() == 1)
        try api.put("b", labels: ["app": "w"], ip: "127.0.0.3")
        try await eventually(timeout: .seconds(10), "the change made while the watch was down") { try Self.workers(smg)[url("127.0.0.3")] != nil }

        // An expired version: the watch breaks, changes happen, and the server forgets its
        // history before the router is back (it waits at least 0.4 s after a failure); the
        // re-watch is answered 410, and the router lists again.
        try await eventually(timeout: .seconds(5), "the router watches again") { try api.stats()["open_watches"] as? Int == 1 }
        try api.breakWatches()
        try api.delete("a")
        try api.put("c", labels: ["app": "w"], ip: "127.0.0.4")
        try api.compact()
        try await eventually(timeout: .seconds(10), "the re-list has both changes") {
            try Self.workers(smg).keys.sorted() == [url("127.0.0.3"), url("127.0.0.4")]
        }
        #expect(try Self.metric(smg, "smg_discovery_kubernetes_watch_restarts_total", #"reason="expired""#) >= 1, "the 410 was seen")
        #expect(try Self.metric(smg, "smg_discovery_kubernetes_lists_total", #"result="ok""#) >= 2)
        #expect(try api.stats()["expired"] as? Int ?? 0 >= 1)
        _ = pods
    }

    @Test func prefillAndDecodePodsBecomeAPDPairWithTheAnnotatedBootstrapPort() async throws {
        let api = try await APIServerDouble()
        let prefill = try await InProcessWorker(name: "p", host: "127.0.0.5", ["--role", "prefill"])
        let decode = try await InProcessWorker(name: "d", host: "127.0.0.6", port: prefill.port, ["--role", "decode"])
        try api.put("prefill-0", labels: ["app": "sglang", "component": "prefill"], ip: "127.0.0.5",
                    annotations: ["sglang.ai/bootstrap-port": "\(prefill.bootstrapPort!)"])
        try api.put("decode-0", labels: ["app": "sglang", "component": "decode"], ip: "127.0.0.6")
        let smg = try await RouterProcess([
            "--pd-disaggregation", "--service-discovery", "--prefill-selector", "app=sglang", "component=prefill",
            "--decode-selector", "app=sglang", "component=decode", "--service-discovery-namespace", "llm", "--service-discovery-port", "\(prefill.port)",
        ], environment: ["KUBECONFIG": try api.kubeconfig()])
        try await eventually(timeout: .seconds(10), "both pods are workers") { try Self.workers(smg).count == 2 }
        let listed = try Self.workers(smg)
        let p = listed["http://127.0.0.5:\(prefill.port)"], d = listed["http://127.0.0.6:\(prefill.port)"]
        #expect(p?["worker_type"] as? String == "prefill" && p?["bootstrap_port"] as? Int == prefill.bootstrapPort, "\(p ?? [:])")
        #expect(d?["worker_type"] as? String == "decode")
        try await eventually(timeout: .seconds(10), "a request goes through the pair") { try smg.chat("hello").status == 200 }
        _ = decode
    }

    @Test func routersFindEachOtherByTheirPodsAndShareWhatTheyDiscover() async throws {
        let api = try await APIServerDouble()
        let worker = try await InProcessWorker(name: "w", host: "127.0.0.2")
        let meshPort = try freeLoopbackPort()
        try api.put("smg-0", labels: ["app": "smg-router"], ip: "127.0.0.11", ready: false)
        try api.put("smg-1", labels: ["app": "smg-router"], ip: "127.0.0.12", ready: false)
        try api.put("w-0", labels: ["app": "sglang-worker"], ip: "127.0.0.2")
        let kubeconfig = try api.kubeconfig()
        func router(_ i: Int, _ extra: [String]) async throws -> RouterProcess {
            try await RouterProcess(["--enable-mesh", "--mesh-host", "127.0.0.1\(i + 1)", "--mesh-port", "\(meshPort)", "--mesh-server-name", "smg-\(i)",
                                     "--service-discovery", "--router-selector", "app=smg-router", "--service-discovery-namespace", "llm",
                                     "--service-discovery-port", "\(worker.port)"] + extra,
                                    environment: ["KUBECONFIG": kubeconfig, "POD_NAME": "smg-\(i)", "POD_IP": "127.0.0.1\(i + 1)"])
        }
        // Only the first discovers workers: the second has its worker from the first, over the
        // mesh it formed with no --mesh-peer-urls.
        let first = try await router(0, ["--selector", "app=sglang-worker"])
        let second = try await router(1, [])
        func members(_ r: RouterProcess) throws -> [String: String] {
            var out: [String: String] = [:]
            for m in try r.request("GET", "/ha/status").json()["members"] as? [[String: Any]] ?? [] { out[m["name"] as? String ?? "?"] = m["status"] as? String }
            return out
        }
        do {
            try await eventually(timeout: .seconds(15), "the two routers are one mesh") {
                try members(first) == ["smg-1": "alive"] && members(second) == ["smg-0": "alive"]
            }
        } catch {
            Issue.record("first: \(first.process.stderr.suffix(3000))\nsecond: \(second.process.stderr.suffix(3000))")
            throw error
        }
        try await eventually(timeout: .seconds(10), "the second router has the worker the first discovered") {
            try Self.workers(second)["http://127.0.0.2:\(worker.port)"] != nil
        }
        try await eventually(timeout: .seconds(10), "and routes to it") { try second.chat("hello").header("x-sim-worker") == "w" }
        // The discovered worker's pod goes: both routers drop it.
        try api.delete("w-0")
        try await eventually(timeout: .seconds(10), "both routers drop the deleted pod's worker") {
            try Self.workers(first).isEmpty && Self.workers(second).isEmpty
        }
    }

    @Test func aRotatedTokenIsReadAgainFromItsFile() async throws {
        let api = try await APIServerDouble(tokens: ["t1"])
        let pods = try await Self.podWorkers(["a", "b", "c"])
        let port = pods[0].port
        let tokenFile = api.directory.appendingPathComponent("router-token").path
        try "t1\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        try api.put("a", labels: ["app": "w"], ip: "127.0.0.2")
        let smg = try await RouterProcess(["--service-discovery", "--selector", "app=w", "--service-discovery-port", "\(port)"],
                                          environment: ["KUBECONFIG": try api.kubeconfig(tokenFile: tokenFile)])
        try await eventually(timeout: .seconds(10), "listed with t1") { try Self.workers(smg).count == 1 }
        try await eventually(timeout: .seconds(5), "watching with t1") { try api.stats()["open_watches"] as? Int == 1 }

        // Rotated: the file has t2 and the server takes only t2; the next watch uses it.
        try "t2\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        try api.accept(["t2"])
        try api.breakWatches()
        try api.put("b", labels: ["app": "w"], ip: "127.0.0.3")
        try await eventually(timeout: .seconds(10), "the change seen with t2") { try Self.workers(smg).count == 2 }
        try await eventually(timeout: .seconds(5), "watching with t2") { try api.stats()["open_watches"] as? Int == 1 }
        #expect(((try api.stats()["tokens"] as? [String: Int])?["t2"] ?? 0) >= 1)

        // Revoked before the file changes: refused (401) and retried, until the file has the new one.
        try api.accept(["t3"])
        try api.breakWatches()
        try api.put("c", labels: ["app": "w"], ip: "127.0.0.4")
        try await eventually(timeout: .seconds(10), "the router is refused") { try api.stats()["unauthorized"] as? Int ?? 0 >= 1 }
        #expect(try Self.workers(smg).count == 2)
        try "t3\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        try await eventually(timeout: .seconds(15), "the change seen once the file has t3") { try Self.workers(smg).count == 3 }
        _ = pods
    }

    /// The double is checked with the official Kubernetes Python client (lists, selectors,
    /// paging, watch events and bookmarks, 410 and 401 as the client reads them), so that it
    /// stands for the API and not for what smg does.
    @Test(.enabled(if: python != nil || ProcessInfo.processInfo.environment["CI"] != nil, "no SMG_TEST_PYTHON with the kubernetes package (./dev test makes one)"))
    func theDoubleAnswersAsTheOfficialClientExpects() async throws {
        let api = try await APIServerDouble()
        let check = try TestProcess(URL(fileURLWithPath: Self.python ?? "/usr/bin/python3"), [
            APIServerDouble.root.appendingPathComponent("Tests/Kubernetes/check-apiserver-double.py").path, api.server, api.pki.caPath, "t1",
        ], name: "official client check")
        let status = await check.waitForExit(timeout: .seconds(90))
        #expect(status == 0, "the official client's checks failed: \(check.stdout) \(check.stderr)")
    }
}
