import Foundation
@testable import Node
import Testing

/// The pure parts of Kubernetes discovery: the pod cache a list and watch events move, the
/// objects read from the API's JSON, selectors, the event-line cutter, access from a kubeconfig
/// or the pod's service account, and the flags. The whole, over HTTP against the API server
/// double, is in `KubernetesDiscoveryTests`.
@Suite struct KubernetesTests {
    static let selector = try! KubeSelector(["app=w"], flag: "--selector")

    static func pod(_ name: String, rv: String, labels: [String: String] = ["app": "w"], ready: Bool = true, ip: String? = "10.0.0.1") -> KubePod {
        KubePod(namespace: "llm", name: name, resourceVersion: rv, labels: labels, podIP: ip, phase: "Running", ready: ready)
    }

    @Test func aListReplacesThePodsAndSaysHow() {
        var cache = PodCache(selector: Self.selector)
        #expect(cache.resourceVersion == nil, "nothing listed: list first")
        let first = cache.listed([Self.pod("a", rv: "1"), Self.pod("b", rv: "2"), Self.pod("x", rv: "3", labels: ["app": "other"])], resourceVersion: "10")
        #expect(first.map { $0.new?.name } == ["a", "b"] && first.allSatisfy { $0.old == nil }, "pods the selector does not match are left out")
        #expect(cache.resourceVersion == "10")
        // A re-list after a 410: a pod gone meanwhile comes out as a deletion, a changed one as
        // a change, an unchanged one not at all.
        let second = cache.listed([Self.pod("b", rv: "12", ready: false), Self.pod("c", rv: "13")], resourceVersion: "20")
        #expect(second.map { "\($0.old?.name ?? "-")→\($0.new?.name ?? "-")" } == ["a→-", "b→b", "-→c"])
        #expect(cache.listed([Self.pod("b", rv: "12", ready: false), Self.pod("c", rv: "13")], resourceVersion: "21").isEmpty)
    }

    @Test func watchEventsMoveTheCacheAndItsVersion() {
        var cache = PodCache(selector: Self.selector)
        _ = cache.listed([Self.pod("a", rv: "1")], resourceVersion: "5")
        #expect(cache.apply(.added(Self.pod("b", rv: "6"))) == .changes([.init(old: nil, new: Self.pod("b", rv: "6"))]))
        #expect(cache.apply(.modified(Self.pod("a", rv: "7", ready: false))) == .changes([.init(old: Self.pod("a", rv: "1"), new: Self.pod("a", rv: "7", ready: false))]))
        // Relabelled out of the selector: gone, as a deletion.
        #expect(cache.apply(.modified(Self.pod("b", rv: "8", labels: ["app": "z"]))) == .changes([.init(old: Self.pod("b", rv: "6"), new: nil)]))
        #expect(cache.apply(.deleted(Self.pod("zz", rv: "9"))) == .changes([]), "deleting what is not known changes nothing")
        #expect(cache.apply(.bookmark(resourceVersion: "15")) == .changes([]))
        #expect(cache.resourceVersion == "15", "a bookmark moves the version a re-watch starts from")
        #expect(cache.apply(.error(KubeStatus(code: 500, reason: "InternalError"))) == .failed(KubeStatus(code: 500, reason: "InternalError")))
        #expect(cache.resourceVersion == "15" && cache.pods.count == 1, "an error that is no expiry keeps the version and the pods")
        #expect(cache.apply(.error(KubeStatus(code: 410, reason: "Expired"))) == .relist(KubeStatus(code: 410, reason: "Expired")))
        #expect(cache.resourceVersion == nil && cache.pods.count == 1, "410: list again, keeping the pods to tell what changed")
    }

    @Test func objectsAreReadFromTheAPIsJSON() throws {
        let line = #"{"type":"MODIFIED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"llm","uid":"u","resourceVersion":"42","deletionTimestamp":"2026-01-01T00:00:00Z","labels":{"app":"w"},"annotations":{"sglang.ai/bootstrap-port":"8998"}},"spec":{"containers":[]},"status":{"phase":"Running","podIP":"fd00::5","conditions":[{"type":"PodScheduled","status":"True"},{"type":"Ready","status":"True"}]}}}"#
        guard case .modified(let pod) = try KubeWatchEvent.parse(Array(line.utf8)) else { Issue.record("not MODIFIED"); return }
        #expect(pod.key == "llm/p" && pod.resourceVersion == "42" && pod.podIP == "fd00::5" && pod.ready && pod.terminating && !pod.serving)
        #expect(pod.annotations["sglang.ai/bootstrap-port"] == "8998")
        let gone = #"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 1 (5)","reason":"Expired","code":410}}"#
        #expect(try KubeWatchEvent.parse(Array(gone.utf8)) == .error(KubeStatus(code: 410, reason: "Expired", message: "too old resource version: 1 (5)")))
        let mark = #"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"77"}}}"#
        #expect(try KubeWatchEvent.parse(Array(mark.utf8)) == .bookmark(resourceVersion: "77"))
        for bad in [#"{"type":"ADDED","object":{"metadata":{"name":"p"}}}"#, #"{"type":"ADDED","object":{"kind":"Service","metadata":{}}}"#,
                    #"{"type":"RESTARTED","object":{}}"#, #"{"type":"ADDED","object":{"metadata":{"name":"p","resourceVersion":"1","labels":{"a":1}}}}"#, "[]", "{"] {
            #expect(throws: KubeDecodingError.self, "\(bad)") { try KubeWatchEvent.parse(Array(bad.utf8)) }
        }
        let list = try KubePodList.parse(Array(#"{"kind":"PodList","metadata":{"resourceVersion":"9","continue":"next"},"items":[{"metadata":{"name":"a","resourceVersion":"3"}}]}"#.utf8))
        #expect(list.resourceVersion == "9" && list.continueToken == "next" && list.items.map(\.key) == ["default/a"])
    }

    @Test func watchLinesDoNotDependOnWhereReadsEnd() throws {
        let body = Array("{\"a\":1}\n\r\n{\"b\":2}\n{\"c\"".utf8)
        for cut in 0...body.count {
            var lines = WatchLines(maxLine: 64)
            let got = try lines.feed(body[..<cut]) + lines.feed(body[cut...]) + [lines.finish()].compactMap { $0 }
            #expect(got.map { String(decoding: $0, as: UTF8.self) } == [#"{"a":1}"#, #"{"b":2}"#, #"{"c""#], "cut at \(cut)")
        }
        var bounded = WatchLines(maxLine: 8)
        #expect(throws: WatchLines.TooLong.self) { try bounded.feed(Array(repeating: UInt8(ascii: "x"), count: 9)) }
    }

    @Test func selectorsAreCheckedAsKubernetesChecksLabels() throws {
        let s = try KubeSelector(["tier=inference", "app=sglang-worker", "example.com/role==prefill"], flag: "--selector")
        #expect(s.description == "app=sglang-worker,example.com/role=prefill,tier=inference")
        #expect(s.matches(["app": "sglang-worker", "tier": "inference", "example.com/role": "prefill", "other": "x"]))
        #expect(!s.matches(["app": "sglang-worker", "tier": "inference"]))
        #expect(try KubeSelector(["app=a,tier=b"], flag: "--selector").pairs.count == 2)
        for bad in [["app"], ["-app=x"], ["app=x y"], ["Example.com/app=x"], ["app=x", "app=y"], [String(repeating: "a", count: 64) + "=x"], []] {
            #expect(throws: ConfigError.self, "\(bad)") { try KubeSelector(bad, flag: "--selector") }
        }
        #expect(KubeAPI.podsTarget(namespace: "llm", [("labelSelector", s.description), ("watch", "1")])
                == "/api/v1/namespaces/llm/pods?labelSelector=app%3Dsglang-worker%2Cexample.com%2Frole%3Dprefill%2Ctier%3Dinference&watch=1")
    }

    @Test func backoffDoublesToThirtySecondsWithJitter() {
        for failures in 1...20 {
            let base = min(30_000, 500 << min(failures - 1, 10))
            for random in [0, 1, UInt64.max / 2, UInt64.max] as [UInt64] {
                let ms = PodWatcher.backoffMs(failures: failures, random: random)
                #expect(ms >= base * 4 / 5 && ms <= base * 6 / 5, "failures \(failures): \(ms)")
            }
        }
    }

    // MARK: access

    func directory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smg-kubeconfig-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func aKubeconfigsCurrentContextNamesServerAndCredentials() throws {
        let dir = try directory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try "tok-1\n".write(to: dir.appendingPathComponent("token"), atomically: true, encoding: .utf8)
        let config = """
            apiVersion: v1
            kind: Config
            current-context: b
            clusters:
            - {name: one, cluster: {server: "http://127.0.0.1:8001"}}
            - {name: two, cluster: {server: "http://[::1]:6443/prefix/"}}
            users:
            - {name: u1, user: {token: abc}}
            - {name: u2, user: {tokenFile: token}}
            - {name: u3, user: {exec: {command: aws}}}
            contexts:
            - {name: a, context: {cluster: one, user: u1}}
            - {name: b, context: {cluster: two, user: u2}}
            - {name: c, context: {cluster: one, user: u3}}
            """
        let path = dir.appendingPathComponent("config").path
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        let access = try KubeAccess.kubeconfig(path: path)
        #expect(access.host == "::1" && access.port == 6443 && access.pathPrefix == "/prefix" && access.tls == nil)
        #expect(access.token == .file(dir.appendingPathComponent("token").path), "a relative tokenFile is next to the kubeconfig")
        #expect(try access.authorization() == "Bearer tok-1")
        try "tok-2".write(to: dir.appendingPathComponent("token"), atomically: true, encoding: .utf8)
        #expect(try access.authorization() == "Bearer tok-2", "the token file is read at each request")

        try config.replacingOccurrences(of: "current-context: b", with: "current-context: c").write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try KubeAccess.kubeconfig(path: path) } throws: { "\($0)".contains("exec") }
        try config.replacingOccurrences(of: "current-context: b", with: "current-context: nope").write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try KubeAccess.kubeconfig(path: path) } throws: { "\($0)".contains("no context named nope") }
        #expect { try KubeAccess.infer(environment: ["KUBECONFIG": dir.appendingPathComponent("missing").path], home: dir.path) } throws: { "\($0)".contains("no such file") }
        #expect { try KubeAccess.infer(environment: [:], home: dir.path) } throws: { "\($0)".contains("no API server found") }
    }

    @Test func inTheClusterTheServiceAccountIsUsed() throws {
        let dir = try directory()
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect { try KubeAccess.inCluster(environment: ["KUBERNETES_SERVICE_HOST": "10.96.0.1"], directory: dir.path) } throws: { "\($0)".contains("token") }
        try "sa-token".write(to: dir.appendingPathComponent("token"), atomically: true, encoding: .utf8)
        #expect { try KubeAccess.inCluster(environment: ["KUBERNETES_SERVICE_HOST": "10.96.0.1"], directory: dir.path) } throws: { "\($0)".contains("ca.crt") }
        #expect { try KubeAccess.inCluster(environment: ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "x"], directory: dir.path) } throws: {
            "\($0)".contains("KUBERNETES_SERVICE_PORT")
        }
    }

    // MARK: flags

    func failure(_ args: [String]) -> String? {
        do {
            _ = try RouterConfig.load(arguments: args, environment: [:])
            return nil
        } catch {
            return error.message
        }
    }

    @Test func theFlagsAreCheckedAtStartUp() throws {
        let c = try RouterConfig.load(arguments: ["--service-discovery", "--selector", "app=w", "tier=gpu", "--service-discovery-namespace", "llm",
                                                  "--service-discovery-port", "8000", "--model-id-from", "annotation:example.com/model"], environment: [:])
        #expect(c.kubernetes?.workers?.description == "app=w,tier=gpu" && c.kubernetes?.namespace == "llm" && c.kubernetes?.port == 8000)
        #expect(c.kubernetes?.bootstrapAnnotation == "sglang.ai/bootstrap-port" && c.kubernetes?.modelIDFrom == .annotation("example.com/model"))
        #expect(c.kubernetes?.kvAnnotations == ["kv_connector": "smg.ai/kv-connector", "kv_engine_id": "smg.ai/kv-engine-id"])
        #expect(try RouterConfig.load(arguments: ["--discovery-provider", "kubernetes", "--selector", "app=w"], environment: [:]).kubernetes?.port == 80)
        #expect(try RouterConfig.load(arguments: [], environment: [:]).kubernetes == nil)
        for (args, message) in [
            (["--selector", "app=w"], "--selector needs --service-discovery"),
            (["--service-discovery", "--discovery-provider", "kubernetes", "--selector", "app=w"], "not both"),
            (["--service-discovery"], "needs --selector"),
            (["--service-discovery", "--selector", "app"], "expected key=value"),
            (["--service-discovery", "--prefill-selector", "r=p"], "--prefill-selector needs --pd-disaggregation"),
            (["--service-discovery", "--pd-disaggregation", "--selector", "app=w"], "in PD mode give --prefill-selector"),
            (["--service-discovery", "--router-selector", "app=smg"], "needs --enable-mesh"),
            (["--service-discovery", "--selector", "app=w", "--service-discovery-namespace", "Not_A_Namespace"], "not a namespace name"),
            (["--service-discovery", "--selector", "app=w", "--service-discovery-port", "0"], "1 to 65535"),
            (["--service-discovery", "--selector", "app=w", "--model-id-from", "pod-name"], "expected namespace, label:<key> or annotation:<key>"),
            (["--service-discovery", "--selector", "app=w", "--bootstrap-port-annotation", "not valid"], "not an annotation key"),
            (["--service-discovery", "--selector", "app=w", "--kv-engine-id-annotation", "-bad"], "--kv-engine-id-annotation -bad: not an annotation key"),
            (["--kv-connector-annotation", "example.com/kv"], "--kv-connector-annotation needs --service-discovery"),
        ] {
            let got = failure(args)
            #expect(got?.contains(message) == true, "\(args): \(got ?? "loaded")")
        }
    }
}
