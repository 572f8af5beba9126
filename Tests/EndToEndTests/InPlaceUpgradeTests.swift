import Foundation
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `--takeover-socket`: a new smg process takes a running one's sockets, the old one drains and
/// exits, and clients see nothing: no refused connection, no failed request, no cut stream.
@Suite(.serialized) struct InPlaceUpgradeTests {
    /// A place for the takeover socket (removed by the test).
    static func socketPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("smg-up-\(UUID().uuidString.prefix(8)).sock").path
    }

    /// Clients on their own thread while an upgrade happens: one opens a connection per request,
    /// one keeps its connection alive until the router says `connection: close` (as HTTP/1.1
    /// clients do). Every error or non-200 counts as a failure.
    final class Traffic: @unchecked Sendable {
        struct Tally { var ok = 0; var failures: [String] = [] }
        let tally = Mutex(Tally())
        private let running = Atomic<Bool>(true)
        private var threads: [Thread] = []

        init(port: Int) {
            let body = Array(#"{"messages":[{"role":"user","content":"hello"}]}"#.utf8)
            let fresh = Thread { [self] in
                while running.load(ordering: .relaxed) {
                    do {
                        let r = try HTTPClient.request(port: port, method: "POST", path: "/v1/chat/completions", body: body)
                        record(r.status == 200 ? nil : "fresh connection: \(r.status)")
                    } catch { record("fresh connection: \(error)") }
                    usleep(5_000)
                }
            }
            let kept = Thread { [self] in
                var connection: HTTPConnection?
                while running.load(ordering: .relaxed) {
                    do {
                        let c = try connection ?? HTTPConnection(port: port)
                        connection = c
                        let r = try c.request("POST", "/v1/chat/completions", body: body)
                        record(r.status == 200 ? nil : "kept-alive connection: \(r.status)")
                        if r.header("connection")?.lowercased() == "close" { connection = nil }
                    } catch {
                        record("kept-alive connection: \(error)")
                        connection = nil
                    }
                    usleep(5_000)
                }
            }
            threads = [fresh, kept]
            for t in threads { t.start() }
        }

        private func record(_ failure: String?) {
            tally.withLock { t in if let failure { t.failures.append(failure) } else { t.ok += 1 } }
        }

        var ok: Int { tally.withLock { $0.ok } }

        func stop() async -> Tally {
            running.store(false, ordering: .relaxed)
            while threads.contains(where: { !$0.isFinished }) { try? await Task.sleep(for: .milliseconds(10)) }
            return tally.withLock { $0 }
        }
    }

    @Test func anUpgradeCutsNoStreamFailsNoRequestAndCanBeRepeated() async throws {
        // 40 tokens a second: a 120-token stream lasts 3 s, so it is in flight across the upgrade.
        let w = try await SimWorkerProcess(name: "w", ["--tokens-per-second", "40"])
        let path = Self.socketPath()
        defer { unlink(path) }
        let flags = ["--worker-urls", w.url, "--takeover-socket", path, "--policy", "round_robin"]
        let old = try await RouterProcess(flags)
        let stream = try HTTPConnection.startStream(port: old.port, body: #"{"stream":true,"max_tokens":120,"messages":[{"role":"user","content":"a long answer"}]}"#)
        let traffic = Traffic(port: old.port)
        try await eventually(timeout: .seconds(10), "traffic flows") { traffic.ok >= 5 }

        let new = try await RouterProcess(flags + ["--port", String(old.port), "--prometheus-port", String(old.metricsPort)])
        #expect(new.port == old.port && new.metricsPort == old.metricsPort)
        #expect(new.process.stderr.contains("in-place upgrade: took over"))
        // The old router drains its stream (about 3 s) and exits cleanly.
        let status = await old.process.waitForExit(timeout: .seconds(30))
        #expect(status == 0, "the predecessor exits 0 after draining; stderr: \(old.process.stderr)")
        #expect(old.process.stderr.contains("in-place upgrade: the successor serves"))
        let (code, _, events) = try stream.readEvents()
        #expect(code == 200)
        #expect(events.last?.data == "[DONE]", "the stream open across the upgrade ends normally")
        #expect(events.count >= 120, "every token arrived: \(events.count) events")

        // Requests keep flowing through the successor; none failed at any moment.
        let before = traffic.ok
        try await eventually(timeout: .seconds(10), "traffic flows through the successor") { traffic.ok >= before + 10 }
        // The successor listens for its own successor: a second upgrade in a row.
        let third = try await RouterProcess(flags + ["--port", String(old.port), "--prometheus-port", String(old.metricsPort)])
        #expect(await new.process.waitForExit(timeout: .seconds(30)) == 0)
        #expect(third.process.stderr.contains("in-place upgrade: took over"))
        let after = traffic.ok
        try await eventually(timeout: .seconds(10), "traffic flows through the third") { traffic.ok >= after + 10 }
        let tally = await traffic.stop()
        #expect(tally.failures.isEmpty, "failed: \(tally.failures.prefix(5)) of \(tally.failures.count) (ok \(tally.ok))")
        let metrics = try HTTPClient.request(port: old.metricsPort, method: "GET", path: "/metrics")
        #expect(metrics.status == 200, "the metrics port was handed over too")
    }

    @Test func aMeshedRouterIsUpgradedWithoutItsPeerSeeingItLeaveOrDie() async throws {
        let w = try await SimWorkerProcess(name: "w")
        let extra = try await SimWorkerProcess(name: "added")
        let path = Self.socketPath()
        defer { unlink(path) }
        let ports = try (0..<2).map { _ in try freeLoopbackPort() }
        func router(_ name: String, _ i: Int, _ more: [String] = []) async throws -> RouterProcess {
            try await RouterProcess(["--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1", "--mesh-port", String(ports[i]),
                                     "--mesh-key-file", MeshMembershipTests.keyFile.path, "--mesh-peer-urls", "127.0.0.1:\(ports[1 - i])",
                                     "--worker-urls", w.url] + more)
        }
        let a = try await router("a", 0, ["--takeover-socket", path])
        let b = try await router("b", 1)
        let mesh = MeshMembershipTests()
        try await eventually(timeout: .seconds(10), "the mesh formed") { try mesh.view(a) == ["b": "alive"] && mesh.view(b) == ["a": "alive"] }
        // A worker added at run time (not in the flags): the successor must have it.
        #expect(try a.request("POST", "/workers", body: #"{"url":"\#(extra.url)"}"#).status < 300)
        try await eventually(timeout: .seconds(10), "b has the added worker") { (try b.request("GET", "/workers").json()["workers"] as? [Any])?.count == 2 }

        let a2 = try await router("a", 0, ["--takeover-socket", path, "--port", String(a.port), "--prometheus-port", String(a.metricsPort)])
        // b never sees a other than alive: through the upgrade, and for longer than a failure
        // would take to be declared (suspicion ends within about 3 s on loopback).
        var seen: Set<String> = []
        let until = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < until {
            if let s = try mesh.view(b)["a"] { seen.insert(s) }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(seen == ["alive"], "b saw a as \(seen)")
        #expect(await a.process.waitForExit(timeout: .seconds(30)) == 0)
        #expect(!a.process.stderr.contains("left the cluster"), "the predecessor hands over, it does not leave")
        try await eventually(timeout: .seconds(10), "the successor sees b") { try mesh.view(a2) == ["b": "alive"] }
        let workers = try a2.request("GET", "/workers").json()["workers"] as? [[String: Any]] ?? []
        #expect(Set(workers.compactMap { $0["url"] as? String }).count == 2, "the worker added at run time was taken over")
        #expect(workers.allSatisfy { $0["is_healthy"] as? Bool == true }, "health taken over: \(workers)")
    }

    @Test func strangersAndMisconfiguredSuccessorsChangeNothing() async throws {
        let w = try await SimWorkerProcess(name: "w")
        let path = Self.socketPath()
        defer { unlink(path) }
        let flags = ["--worker-urls", w.url, "--takeover-socket", path]
        let old = try await RouterProcess(flags)

        // A client that reads the offer and answers garbage, one that hangs up at once, one that
        // sends a length past every limit: the router goes on serving.
        for junk in [Array("not json at all".utf8), [], [0xff, 0xff, 0xff, 0xff]] {
            let fd = try Self.connect(path)
            var buffer = [UInt8](repeating: 0, count: 65536)
            _ = read(fd, &buffer, buffer.count)  // the offer (its descriptors are discarded by the kernel)
            if !junk.isEmpty {
                var frame = junk == [0xff, 0xff, 0xff, 0xff] ? junk : [0, 0, 0, UInt8(junk.count)] + junk
                _ = write(fd, &frame, frame.count)
            }
            close(fd)
        }
        try await eventually(timeout: .seconds(5), "the abandoned offers are logged") {
            old.process.stderr.components(separatedBy: "in-place upgrade abandoned").count - 1 == 3
        }
        #expect(try old.chat("still here").status == 200)

        // A successor configured for another port does not start, and takes nothing.
        let other = try freeLoopbackPort()
        let wrong = try TestProcess(Binaries.smg, ["--host", "127.0.0.1", "--port", String(other), "--prometheus-port", "0"] + flags, name: "wrong successor")
        #expect(await wrong.waitForExit(timeout: .seconds(20)).map { $0 != 0 } == true)
        #expect(wrong.stderr.contains("configured with --port \(other)"), "\(wrong.stderr)")
        #expect(try old.chat("still here").status == 200)

        // A stale socket file (its router was killed) is a first start, not an error.
        old.process.signal(SIGKILL)
        _ = await old.process.waitForExit(timeout: .seconds(10))
        #expect(FileManager.default.fileExists(atPath: path))
        let fresh = try await RouterProcess(flags)
        #expect(!fresh.process.stderr.contains("took over"))
        #expect(try fresh.chat("fresh").status == 200)
    }

    /// `systemctl reload`: SIGUSR2 starts the successor (the same command line), which takes
    /// over and tells systemd it is the main process now.
    @Test func sigusr2StartsTheSuccessorAndSystemdHearsOfIt() async throws {
        let w = try await SimWorkerProcess(name: "w")
        let path = Self.socketPath()
        let notify = try NotifySocket()
        defer { unlink(path) }
        let old = try await RouterProcess(["--worker-urls", w.url, "--takeover-socket", path], environment: ["NOTIFY_SOCKET": notify.path])
        #expect(try notify.next(timeout: 10) == "READY=1\nMAINPID=\(old.process.process.processIdentifier)")
        old.process.signal(SIGUSR2)
        let message = try notify.next(timeout: 20)
        let successor = try #require(message.split(separator: "\n").first { $0.hasPrefix("MAINPID=") }.flatMap { Int32($0.dropFirst(8)) })
        defer { kill(successor, SIGKILL) }
        #expect(successor != old.process.process.processIdentifier && message.hasPrefix("READY=1"))
        #expect(await old.process.waitForExit(timeout: .seconds(30)) == 0)
        #expect(kill(successor, 0) == 0, "the successor outlives its parent")
        #expect(try HTTPClient.request(port: old.port, method: "POST", path: "/v1/chat/completions",
                                       body: Array(#"{"messages":[{"role":"user","content":"hi"}]}"#.utf8)).status == 200)
        kill(successor, SIGTERM)
    }

    /// A stand-in for systemd's notification socket.
    final class NotifySocket {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("smg-notify-\(UUID().uuidString.prefix(8))").path
        private let fd: Int32

        init() throws {
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            guard rc == 0 else { throw TestFailure("bind \(path): errno \(errno)") }
        }

        deinit {
            close(fd)
            unlink(path)
        }

        func next(timeout: Int) throws -> String {
            var tv = timeval(tv_sec: timeout, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { throw TestFailure("no notification within \(timeout) s") }
            return String(decoding: buffer.prefix(n), as: UTF8.self)
        }
    }

    static func connect(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8))
        }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0 else { close(fd); throw TestFailure("connect to \(path): errno \(errno)") }
        return fd
    }
}
