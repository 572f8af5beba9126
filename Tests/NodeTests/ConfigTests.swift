import Foundation
@testable import Node
import Policies
import Testing

@Suite struct ConfigTests {
    func load(_ args: [String], env: [String: String] = [:]) throws -> RouterConfig {
        try RouterConfig.load(arguments: args, environment: env)
    }

    /// The error message loading would give, or nil if it loads.
    func failure(_ args: [String], env: [String: String] = [:]) -> String? {
        do {
            _ = try RouterConfig.load(arguments: args, environment: env)
            return nil
        } catch {
            return error.message
        }
    }

    @Test func defaultsComeFromTheReference() throws {
        let c = try load([])
        #expect(c.host == "0.0.0.0")
        #expect(c.port == 30000)
        #expect(c.maxPayloadSize == 536_870_912)
        #expect(c.requestTimeoutSecs == 1800)
        #expect(c.shutdownGracePeriodSecs == 180)
        #expect(c.prometheusPort == 29000)
        #expect(c.flags.double("cache-threshold") == 0.3)
        #expect(c.flags.int("balance-abs-threshold") == 64)
        #expect(c.flags.int("mesh-port") == 39527)
        #expect(c.flags.int("retry-max-retries") == 5)
        #expect(c.flags.string("health-check-endpoint") == "/health")
        #expect(c.policy == .cache_aware)
        #expect(c.policyConfig == PolicyConfig())
        #expect(c.evictionIntervalSecs == 120)
    }

    @Test func everyFlagHasAUniqueNameAndAGenericEnvironmentVariable() {
        let names = FlagTable.all.map(\.name)
        #expect(Set(names).count == names.count)
        for spec in FlagTable.all {
            #expect(spec.environment.last == "SMG_" + spec.name.uppercased().replacingOccurrences(of: "-", with: "_"))
        }
        #expect(FlagTable.spec("redis-url")?.environment.first == "REDIS_URL")
        #expect(FlagTable.spec("log-level")?.environment.first == "RUST_LOG")
    }

    @Test func precedenceIsCommandLineThenEnvironmentThenFileThenDefault() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("smg-\(UUID().uuidString).yaml")
        defer { try? FileManager.default.removeItem(at: file) }
        try "port: 1111\nrequest_timeout_secs: 22\nmax-payload-size: 333\nworker-urls:\n  - http://a:1\n  - http://b:2\n".write(to: file, atomically: true, encoding: .utf8)
        let c = try load(["--config", file.path, "--port", "3333"], env: ["SMG_PORT": "2222", "SMG_REQUEST_TIMEOUT_SECS": "44"])
        #expect(c.port == 3333)
        #expect(c.flags.source("port") == .commandLine)
        #expect(c.requestTimeoutSecs == 44)
        #expect(c.flags.source("request-timeout-secs") == .environment)
        #expect(c.maxPayloadSize == 333)
        #expect(c.flags.source("max-payload-size") == .configFile)
        #expect(c.workerURLs == ["http://a:1", "http://b:2"])
        #expect(c.shutdownGracePeriodSecs == 180)
        #expect(c.flags.source("shutdown-grace-period-secs") == .defaultValue)
    }

    @Test func configPathFromTheEnvironment() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("smg-\(UUID().uuidString).yaml")
        defer { try? FileManager.default.removeItem(at: file) }
        try "port: 4444\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(try load([], env: ["SMG_CONFIG": file.path]).port == 4444)
    }

    @Test func policyKnobsReachThePolicyConfig() throws {
        let c = try load(["--policy", "manual", "--cache-threshold", "0.5", "--balance-abs-threshold", "32", "--balance-rel-threshold", "1.0001",
                          "--max-tree-size", "1000", "--prefix-token-count", "64", "--prefix-hash-load-factor", "2", "--max-idle-secs", "60",
                          "--assignment-mode", "min_group", "--eviction-interval", "5"])
        #expect(c.policy == .manual)
        #expect(c.policyConfig.cacheAware.cacheThreshold == 0.5)
        #expect(c.policyConfig.cacheAware.balanceAbsThreshold == 32)
        #expect(c.policyConfig.cacheAware.balanceRelThreshold == 1.0001)
        #expect(c.policyConfig.cacheAware.maxTreeSize == 1000)
        #expect(c.policyConfig.prefixTokenCount == 64)
        #expect(c.policyConfig.prefixHashLoadFactor == 2)
        #expect(c.policyConfig.maxIdleSecs == 60)
        #expect(c.policyConfig.assignmentMode == .min_group)
        #expect(c.evictionIntervalSecs == 5)
        for name in PolicyName.allCases { #expect(try load(["--policy", name.rawValue]).policy == name) }
    }

    @Test func listsBooleansAndInlineValues() throws {
        let c = try load(["--worker-urls", "http://a:1", "http://[::1]:8000/", "--disable-retries", "--cors-allowed-origins=http://x http://y",
                          "--request-id-headers", "X-Trace", "--port=0"])
        #expect(c.workerURLs == ["http://a:1", "http://[::1]:8000"])
        #expect(c.flags.bool("disable-retries"))
        #expect(c.corsAllowedOrigins == ["http://x", "http://y"])
        #expect(c.requestIDHeaders == ["x-trace"])
        #expect(c.port == 0)
        let envList = try load([], env: ["SMG_WORKER_URLS": "http://a:1 http://b:2"])
        #expect(envList.workerURLs.count == 2)
        #expect(try load(["--disable-retries", "false"]).flags.bool("disable-retries") == false)
        #expect(try load(["--worker_urls", "http://a:1"]).workerURLs == ["http://a:1"], "underscore spelling is accepted")
    }

    @Test func repeatablePrefillFlagsParse() throws {
        let f = try ConfigLoader.resolve(arguments: ["--prefill", "http://p1:30001", "9001", "--prefill", "http://p2:30002", "none", "--decode", "http://d:1"], environment: [:])
        #expect(f.list("prefill") == ["http://p1:30001 9001", "http://p2:30002 none"])
        #expect(f.list("decode") == ["http://d:1"])
        #expect(throws: ConfigError.self) { try ConfigLoader.resolve(arguments: ["--prefill"], environment: [:]) }
    }

    @Test func pdModeTakesSeed000sExampleAndItsPolicyInheritance() throws {
        let pd = try #require(try load(["--pd-disaggregation", "--prefill", "http://prefill1:30001", "9001", "--prefill", "http://prefill3:30003", "none",
                                        "--prefill", "http://prefill4:30004", "--decode", "http://decode1:30003", "--decode", "http://decode2:30004",
                                        "--prefill-policy", "cache_aware", "--decode-policy", "round_robin"]).pd)
        #expect(pd.prefills == [.init(url: "http://prefill1:30001", bootstrapPort: 9001), .init(url: "http://prefill3:30003", bootstrapPort: nil),
                                .init(url: "http://prefill4:30004", bootstrapPort: nil)])
        #expect(pd.decodes == ["http://decode1:30003", "http://decode2:30004"])
        #expect(pd.prefillPolicy == .cache_aware && pd.decodePolicy == .round_robin)
        // Seed 002: --policy fills in the side not given.
        let inherited = try #require(try load(["--pd-disaggregation", "--policy", "round_robin", "--prefill-policy", "cache_aware"]).pd)
        #expect(inherited.prefillPolicy == .cache_aware && inherited.decodePolicy == .round_robin)
        #expect(try load(["--prefill-policy", "random", "--pd-disaggregation"]).pd?.decodePolicy == .cache_aware, "the default --policy")
        for (args, words) in [(["--prefill", "http://p:1"], "--pd-disaggregation"), (["--decode-policy", "random"], "--pd-disaggregation"),
                              (["--pd-disaggregation", "--prefill", "http://p:1", "99999"], "bootstrap port"),
                              (["--pd-disaggregation", "--decode", "http://d:1", "9000"], "one URL"),
                              (["--pd-disaggregation", "--prefill-policy", "fastest"], "unknown policy"),
                              (["--pd-disaggregation", "--worker-urls", "http://w:1"], "--worker-urls")] {
            #expect(failure(args)?.contains(words) == true, "\(args): \(failure(args) ?? "loaded")")
        }
        #expect(try load([]).pd == nil)
    }

    @Test func tracingFlagsAreChecked() throws {
        #expect(try load([]).tracing == nil)
        let t = try #require(try load(["--enable-trace", "--otlp-traces-endpoint", "collector.internal:4317", "--otlp-traces-sample-ratio", "0.25"]).tracing)
        #expect(t.host == "collector.internal" && t.port == 4317 && t.sampleRatio == 0.25 && t.endpointURL == "http://collector.internal:4317")
        #expect(try load(["--enable-trace"]).tracing?.endpointURL == "http://localhost:4317")
        #expect(try load(["--enable-trace", "--otlp-traces-endpoint", "[::1]:4317"]).tracing?.endpointURL == "http://[::1]:4317")
        #expect(try load(["--enable-trace", "--otlp-traces-endpoint", "http://otel:4317/"]).tracing?.host == "otel")
        for (args, words) in [(["--enable-trace", "--otlp-traces-endpoint", "collector"], "host:port"),
                              (["--enable-trace", "--otlp-traces-endpoint", "c:0"], "host:port"),
                              (["--enable-trace", "--otlp-traces-endpoint", "c:99999"], "host:port"),
                              (["--enable-trace", "--otlp-traces-endpoint", "https://c:4317"], "host:port"),
                              (["--enable-trace", "--otlp-traces-sample-ratio", "1.5"], "--otlp-traces-sample-ratio")] {
            #expect(failure(args)?.contains(words) == true, "\(args): \(failure(args) ?? "loaded")")
        }
    }

    @Test func notBuiltFeaturesFailNamingTheFlag() throws {
        for args in [["--model-path", "/tmp"], ["--history-backend", "postgres"],
                     ["--tokenizer-path", "/tmp"], ["--history-backend", "redis"], ["--backend", "openai"]] {
            let message = failure(args)
            #expect(message?.contains(args[0]) == true, "\(args): \(message ?? "loaded")")
        }
        // The same through the environment names the source.
        let message = failure([], env: ["SMG_MODEL_PATH": "/tmp"]) ?? ""
        #expect(message.contains("--model-path") && message.contains("environment"), "\(message)")
        #expect(try load([], env: ["JWT_ISSUER": "https://idp", "JWT_AUDIENCE": "smg"]).security.jwt?.issuer == "https://idp", "https issuers work with TLS")
    }

    @Test func theMeshAdvertisesAnAddressItsPeersCanReach() throws {
        // Wildcard bind, peers on this host: loopback, as before.
        let local = try load(["--enable-mesh", "--mesh-port", "39999", "--mesh-peer-urls", "127.0.0.1:39998"]).mesh
        #expect(local?.advertise == "127.0.0.1:39999" && local?.advertiseWarning == nil && local?.keyring == nil, "keyless starts")
        // Bound to loopback while the peers are elsewhere: said clearly (connect() on UDP sends nothing).
        let stuck = try load(["--enable-mesh", "--mesh-host", "127.0.0.1", "--mesh-port", "39999", "--mesh-peer-urls", "198.18.0.2:39527"]).mesh
        #expect(stuck?.advertiseWarning?.contains("198.18.0.2:39527") == true)
        #expect(try load(["--enable-mesh", "--mesh-port", "39999", "--mesh-advertise-host", "198.18.0.1"]).mesh?.advertise == "198.18.0.1:39999")
        #expect(AdvertiseAddress.routeSource(toHost: "127.0.0.1", port: 9) == "127.0.0.1")
    }

    @Test func aMeshKeyFileOthersCanReadIsWarnedAbout() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("smg-key-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = FileManager.default.createFile(atPath: path, contents: Data((String(repeating: "ab", count: 32) + "\n").utf8),
                                       attributes: [.posixPermissions: 0o644])
        let args = ["--enable-mesh", "--mesh-port", "39999", "--mesh-key-file", path]
        #expect(try load(args).mesh?.keyFileWarning?.contains("chmod 600") == true)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        #expect(try load(args).mesh?.keyFileWarning == nil)
    }

    @Test func securityFlagsParseAndRefuseWhatCannotBeSafe() throws {
        let c = try load(["--control-plane-api-keys", " ops:Operations:admin:s3:cret", "ro:Read Only:user:k2", "--api-key", "inference"])
        #expect(c.security.controlKeys.map(\.id) == ["ops", "ro"])
        #expect(c.security.controlKeys[0].key == "s3:cret", "a key may contain colons")
        #expect(c.security.controlKeys[1].role == .user && c.security.controlPlaneHasOwnCredentials && !c.security.isOpen)
        let env = try RouterConfig.load(arguments: [], environment: ["CONTROL_PLANE_API_KEYS": "a:A:admin:x", "JWT_ISSUER": "http://127.0.0.1:8080/realms/x", "JWT_AUDIENCE": "smg"])
        #expect(env.security.controlKeys.count == 1 && env.security.jwt?.audience == "smg" && env.security.jwt?.roleClaim == "roles")
        #expect(try load([]).security.isOpen)
        // Keys over plain HTTP: from this host, or when allowed by name.
        #expect(try load(["--jwt-issuer", "http://localhost:8080/realms/x", "--jwt-audience", "x"]).security.jwt != nil)
        #expect(try load(["--jwt-issuer", "http://idp.example", "--jwt-audience", "x", "--jwt-allow-http"]).security.jwt?.allowPlainHTTP == true)
        // Tenant keys: repeatable, a key may hold colons; the header only when trusted.
        let tenants = try load(["--tenant-api-key", "a:k1", "--tenant-api-key", "b:k:2", "--trust-tenant-header", "--tenant-header-name", "X-Org"]).security
        #expect(tenants.tenantKeys.map(\.tenant) == ["a", "b"] && tenants.tenantKeys[1].key == "k:2" && tenants.tenantHeader == "x-org")
        #expect(try load(["--tenant-api-key", "a:k1"]).security.tenantHeader == nil)
        for (args, flag) in [(["--control-plane-api-keys", "a:b:root:k"], "root"), (["--control-plane-api-keys", "a:b:admin"], "id:name:role:key"),
                             (["--control-plane-api-keys", "a:b:admin:k", "a:c:user:j"], "twice"),
                             (["--jwt-issuer", "http://idp"], "--jwt-audience"), (["--jwt-audience", "x"], "--jwt-issuer"),
                             (["--jwt-issuer", "http://idp", "--jwt-audience", "x", "--jwt-role-mapping", "Admin"], "--jwt-role-mapping"),
                             (["--api-key", "a\r\nX-Injected: 1"], "--api-key"),
                             (["--jwt-issuer", "http://idp.example", "--jwt-audience", "x"], "--jwt-allow-http"),
                             (["--tenant-api-key", "nokey"], "TENANT_ID:KEY"), (["--tenant-api-key", "a:b:c"], "loaded"),
                             (["--tenant-api-key", "a:k", "b:k"], "given twice"), (["--api-key", "k", "--tenant-api-key", "a:k"], "given twice"),
                             (["--jwt-issuer", "https://idp.example", "--jwt-audience", "x", "--jwt-jwks-uri", "http://198.18.0.9/keys"], "--jwt-allow-http")] {
            let message = failure(args) ?? "loaded"
            #expect(message.contains(flag), "\(args): \(message)")
        }
    }

    @Test func badValuesAreRefusedWithTheFlagName() {
        let cases: [([String], String)] = [
            (["--port", "x"], "--port"), (["--port", "70000"], "--port"), (["--request-timeout-secs", "0"], "--request-timeout-secs"),
            (["--max-payload-size", "-1"], "--max-payload-size"), (["--policy", "fastest"], "--policy"), (["--worker-urls", "http://a:0"], "--worker-urls"),
            (["--worker-urls", "a:1/path"], "--worker-urls"), (["--log-level", "loud"], "--log-level"), (["--bogus"], "--bogus"),
            (["--prometheus-duration-buckets", "0.1", "x"], "--prometheus-duration-buckets"), (["positional"], "positional"),
            (["--port"], "--port"), (["--cache-threshold", "nan"], "--cache-threshold"), (["--cache-threshold", "1.5"], "--cache-threshold"),
            (["--balance-rel-threshold", "0.5"], "--balance-rel-threshold"), (["--assignment-mode", "sideways"], "--assignment-mode"),
            (["--prefix-hash-load-factor", "0.9"], "--prefix-hash-load-factor"), (["--max-tree-size", "0"], "--max-tree-size"),
            (["--history-backend", "postgres", "--postgres-db-url", "postgres://u@h/d", "--postgres-retention-days", "0"], "--postgres-retention-days"),
            (["--history-backend", "redis", "--redis-url", "redis://h", "--redis-retention-days", "-2"], "--redis-retention-days"),
            (["--balance-token-usage-threshold", "0"], "--balance-token-usage-threshold"), (["--overload-token-usage-threshold", "inf"], "--overload-token-usage-threshold"),
            (["--worker-wedge-secs", "-1"], "--worker-wedge-secs"), (["--worker-stall-secs", "3601"], "--worker-stall-secs"),
            (["--worker-stale-secs", "x"], "--worker-stale-secs"), (["--stream-body-stall-timeout-secs", "-1"], "--stream-body-stall-timeout-secs"),
            (["--sse-keepalive-secs", "-1"], "--sse-keepalive-secs"),
            (["--worker-warmup-secs", "-1"], "--worker-warmup-secs"), (["--worker-warmup-share", "1.5"], "--worker-warmup-share"),
            (["--worker-warmup-blocks", "0"], "--worker-warmup-blocks"), (["--worker-warmup-thin-ratio", "nan"], "--worker-warmup-thin-ratio"),
            (["--worker-warmup-divert-every", "-8"], "--worker-warmup-divert-every"),
            (["--load-monitor-interval", "0"], "--load-monitor-interval"), (["--load-monitor-interval", "3601"], "--load-monitor-interval"),
            (["--worker-overload-waiting-requests", "0"], "--worker-overload-waiting-requests"),
            (["--worker-overload-token-usage", "0"], "--worker-overload-token-usage"), (["--worker-overload-token-usage", "1.01"], "--worker-overload-token-usage"),
            (["--worker-overload-token-usage", "nan"], "--worker-overload-token-usage"),
            (["--worker-overload-protection", "--disable-worker-overload-protection"], "--disable-worker-overload-protection"),
            (["--worker-overload-shed", "--disable-worker-overload-protection"], "--worker-overload-shed"),
        ]
        for (args, name) in cases {
            let message = failure(args)
            #expect(message?.contains(name) == true, "\(args): \(message ?? "loaded")")
        }
    }

    @Test func badConfigFiles() throws {
        let dir = FileManager.default.temporaryDirectory
        // Non-string keys once trapped inside Yams (found by fuzz/run.sh config).
        for (text, expected) in [("port: [1, 2]", "port"), ("- a\n- b", "mapping"), ("nope_key: 1", "nope_key"), ("port: : :", "YAML"),
                                 ("? [a]\n: b", "flag name"), ("{[1]: 2}", "flag name"), ("policy: {a: b}", "policy"), ("worker-urls: [[x]]", "worker-urls"),
                                 ("port: 74200:+00000:07270:07270:072742002200", "port")] {
            let file = dir.appendingPathComponent("smg-\(UUID().uuidString).yaml")
            try text.write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }
            let message = failure(["--config", file.path])
            #expect(message?.contains(expected) == true, "\(message ?? "loaded")")
        }
        #expect(throws: ConfigError.self) { try load(["--config", "/nonexistent/smg.yaml"]) }
        // YAML's own spellings still read as before.
        let file = dir.appendingPathComponent("smg-\(UUID().uuidString).yaml")
        try "disable-retries: yes\nport: 8080\ncache-threshold: .5\nworker-urls: http://a:1 http://b:2\napi-key: ~\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let c = try load(["--config", file.path])
        #expect(!c.retry.enabled && c.port == 8080 && c.policyConfig.cacheAware.cacheThreshold == 0.5 && c.workerURLs.count == 2 && c.apiKey == nil)
    }

    @Test func workerURLsAreCanonical() throws {
        #expect(try WorkerURL(parsing: "http://LOCALHOST:8000/").canonical == "http://LOCALHOST:8000")
        #expect(try WorkerURL(parsing: "127.0.0.1:9").canonical == "http://127.0.0.1:9")
        #expect(try WorkerURL(parsing: "http://[::1]:8000").host == "::1")
        #expect(try WorkerURL(parsing: "http://w").port == 80)
        #expect(try WorkerURL(parsing: "https://w").canonical == "https://w:443")
        #expect(try WorkerURL(parsing: "https://10.0.0.1:8443").tlsServerName == nil && WorkerURL(parsing: "https://gpu-1.internal").tlsServerName == "gpu-1.internal")
        #expect(try WorkerURL(parsing: "https://w:1") != WorkerURL(parsing: "http://w:1"), "a scheme is part of a worker's identity")
        for bad in ["grpc://w:1", "http://", "http://w:x", "http://[::1", "http://w:1/v1", "http://a b:1"] {
            #expect(throws: ConfigError.self, "\(bad)") { try WorkerURL(parsing: bad) }
        }
    }

    @Test func helpMentionsEveryFlag() {
        let help = HelpText.render()
        for spec in FlagTable.all { #expect(help.contains("--\(spec.name)")) }
    }
}

@Suite struct ConfigurationDocTests {
    /// docs/configuration.md carries the generated flag table; regenerate with
    /// `swift run smg config-reference` when the flag table changes.
    @Test func documentListsEveryFlagAsTheTableSaysIt() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let doc = try String(contentsOf: root.appendingPathComponent("docs/configuration.md"), encoding: .utf8)
        #expect(doc.contains(HelpText.markdownTable()), "docs/configuration.md is out of date: regenerate its table with `smg config-reference`")
    }
}
