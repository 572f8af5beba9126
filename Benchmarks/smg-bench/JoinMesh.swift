import Foundation

/// `--join`: what it costs a warm router when another one joins its mesh. The measured router
/// (a) is started meshed, with a cluster key made for the run, towards a peer address nobody
/// holds yet; after the load, router b starts there with the same workers and policy. Printed:
/// the bytes b received until its cache-aware tree held as much as a's, how long that took from
/// b's start, and a's peak and settled RSS while it sent (its peak is reset just before).
final class JoinMesh {
    let portA = freePort()
    let portB = freePort()
    let keyPath = FileManager.default.temporaryDirectory.appendingPathComponent("smg-bench-key-\(UUID().uuidString)").path

    let smgPath: String

    init(smgPath: String) {
        self.smgPath = smgPath
        let keygen = Process()
        keygen.executableURL = URL(fileURLWithPath: smgPath)
        keygen.arguments = ["mesh-keygen"]
        let out = Pipe()
        keygen.standardOutput = out
        do { try keygen.run() } catch { fail("cannot run smg mesh-keygen: \(error)") }
        let key = out.fileHandleForReading.readDataToEndOfFile()
        keygen.waitUntilExit()
        _ = FileManager.default.createFile(atPath: keyPath, contents: key, attributes: [.posixPermissions: 0o600])
    }

    /// The mesh flags of router `name` ("a" binds portA and seeds portB, "b" the other way).
    func flags(name: String) -> [String] {
        let (mine, peer) = name == "a" ? (portA, portB) : (portB, portA)
        return ["--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1", "--mesh-port", String(mine),
                "--mesh-peer-urls", "127.0.0.1:\(peer)", "--mesh-key-file", keyPath]
    }

    /// `--meshed`: starts router b now and returns once router a (API on `apiPort`) lists it alive.
    func startPeer(args: [String], awaitedBy apiPort: Int) -> Child {
        let b = Child(smgPath, flags(name: "b") + args + [
            "--host", "127.0.0.1", "--port", String(freePort()), "--prometheus-host", "127.0.0.1", "--prometheus-port", String(freePort())],
            captureOutput: false)
        let by = Date().addingTimeInterval(30)
        func bIsAlive() -> Bool {
            guard let body = httpBody(port: apiPort, path: "/ha/status"),
                  let status = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
                  let members = status["members"] as? [[String: Any]] else { return false }
            return members.contains { $0["name"] as? String == "b" && $0["status"] as? String == "alive" }
        }
        while !bIsAlive() {
            guard Date() < by else { b.stop(); fail("router b did not join a's mesh within 30 s") }
            usleep(100_000)
        }
        return b
    }

    func measure(first a: Child, metricsPort: Int, args: [String]) {
        defer { try? FileManager.default.removeItem(atPath: keyPath) }
        let pidA = a.process.processIdentifier
        guard let treeA = Self.metric(port: metricsPort, prefix: "smg_policy_state_size{"), treeA > 0 else {
            fail("router a reports no cache-aware tree (use --policy cache_aware)")
        }
        let rssBefore = Self.status(pid: pidA, "VmRSS:")
        // Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS.
        guard let clear = FileHandle(forWritingAtPath: "/proc/\(pidA)/clear_refs") else { fail("cannot reset router a's peak RSS") }
        clear.write(Data("5".utf8))
        clear.closeFile()
        let metricsB = freePort()
        let started = Date()
        let b = Child(a.process.executableURL!.path, flags(name: "b") + args + [
            "--host", "127.0.0.1", "--port", String(freePort()), "--prometheus-host", "127.0.0.1", "--prometheus-port", String(metricsB)],
            captureOutput: false)
        defer { b.stop() }
        // Done when b's tree is as big as a's; given up after 20 s without growth.
        var treeB = 0.0, lastGrowth = Date(), doneAt: Date?
        while doneAt == nil, Date().timeIntervalSince(lastGrowth) < 20 {
            usleep(20_000)
            let now = Self.metric(port: metricsB, prefix: "smg_policy_state_size{") ?? 0
            if now > treeB { treeB = now; lastGrowth = Date() }
            if treeB >= treeA * 0.999 { doneAt = Date() }
        }
        let bytesIn = Self.metric(port: metricsB, prefix: #"smg_mesh_bytes{direction="in"}"#) ?? 0
        sleep(2)
        let peak = Self.status(pid: pidA, "VmHWM:"), settled = Self.status(pid: pidA, "VmRSS:")
        print(String(format: "join:          b's tree %.1f of %.1f MiB of prompt %@ %.2f s after b started, %.1f MB received",
                     treeB / 1_048_576, treeA / 1_048_576, doneAt == nil ? "(incomplete)" : "complete",
                     (doneAt ?? lastGrowth).timeIntervalSince(started), bytesIn / 1e6))
        print(String(format: "sender RSS:    %.1f MiB before, %.1f MiB peak while sending, %.1f MiB 2 s after",
                     Double(rssBefore) / 1024, Double(peak) / 1024, Double(settled) / 1024))
    }

    /// The sum of a Prometheus sample family's values whose lines start with `prefix`.
    static func metric(port: Int, prefix: String) -> Double? {
        guard let text = httpBody(port: port, path: "/metrics") else { return nil }
        let values = text.split(separator: "\n").filter { $0.hasPrefix(prefix) }.compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }
        return values.isEmpty ? nil : values.reduce(0, +)
    }

    /// A KiB field of /proc/<pid>/status.
    static func status(pid: Int32, _ field: String) -> Int {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").first { $0.hasPrefix(field) }.flatMap { Int($0.split(separator: " ")[1]) } ?? 0
    }
}
