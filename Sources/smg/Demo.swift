import Foundation
import Mesh
import Node
import NIOPosix
import SimWorker

/// `smg demo [--routers N] [router flags]`: three simulated workers in this process and N
/// routers over them (3 by default), each its own `smg` process, meshed and sealed with a
/// generated key — so a newcomer can `curl` what smg is for: any router answering for the
/// cluster, and the others noticing when one is killed. `--routers 1` runs a single router in
/// this process. The routers stop with the demo (Ctrl-C, or the demo dying).
struct Demo {
    struct Failure: Error, CustomStringConvertible { let description: String }

    /// Tells a router started by the demo which process to outlive by no more than a second.
    static let parentVariable = "SMG_DEMO_PARENT_PID"
    static let firstPort = 30000
    static let firstMetricsPort = 29000
    static let firstMeshPort = 39527

    let workers: [SimWorkerServer]
    /// The command line of each router.
    let routerArguments: [[String]]

    static func start(arguments: [String]) async throws -> Demo {
        var rest = arguments
        var routers = 3
        if let i = rest.firstIndex(of: "--routers") {
            guard i + 1 < rest.count, let n = Int(rest[i + 1]), (1...9).contains(n) else {
                throw Failure(description: "smg demo --routers takes a number from 1 to 9")
            }
            routers = n
            rest.removeSubrange(i...(i + 1))
        }
        let workers: [SimWorkerServer]
        do { workers = try await startWorkers(count: 3) } catch {
            throw Failure(description: "cannot start the demo's simulated workers: \(error)")
        }
        let common = ["--worker-urls"] + workers.map(\.url) + ["--host", "127.0.0.1", "--prometheus-host", "127.0.0.1"]
        guard routers > 1 else { return Demo(workers: workers, routerArguments: [common + rest]) }
        let key = MeshKeyring.generate()
        let meshPorts = (0..<routers).map { firstMeshPort + $0 }
        let sets = (0..<routers).map { i in
            common + ["--port", "\(firstPort + i)", "--prometheus-port", "\(firstMetricsPort + i)",
                      "--enable-mesh", "--mesh-host", "127.0.0.1", "--mesh-port", "\(meshPorts[i])",
                      "--mesh-server-name", "router-\(i + 1)", "--mesh-key", key,
                      "--mesh-peer-urls"] + meshPorts.filter { $0 != meshPorts[i] }.map { "127.0.0.1:\($0)" } + rest
        }
        return Demo(workers: workers, routerArguments: sets)
    }

    private static func startWorkers(count: Int) async throws -> [SimWorkerServer] {
        var servers: [SimWorkerServer] = []
        for i in 0..<count {
            var o = SimWorkerOptions()
            o.workerName = "sim-\(i + 1)"
            o.modelID = "sim-model"
            o.timeToFirstTokenMs = 20
            o.tokensPerSecond = 50
            o.defaultOutputTokens = 16
            servers.append(try await SimWorkerServer.start(o, group: MultiThreadedEventLoopGroup.singleton))
        }
        return servers
    }

    /// Starts each router as a child `smg`, waits until every one is ready and sees all the
    /// others, prints the banner, and stops them all on SIGINT/SIGTERM.
    func runMeshed() async -> Never {
        let signals = Launcher.Signals()
        var children: [Process] = []
        func stopAll() {
            for c in children where c.isRunning { c.terminate() }
            for c in children { c.waitUntilExit() }
        }
        for args in routerArguments {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/proc/self/exe")
            p.arguments = args
            var env = ProcessInfo.processInfo.environment
            env[Self.parentVariable] = String(getpid())
            p.environment = env
            do { try p.run() } catch {
                Launcher.printErr("smg: error: cannot start a demo router: \(error)")
                stopAll()
                exit(1)
            }
            children.append(p)
        }
        let ports = (0..<routerArguments.count).map { Self.firstPort + $0 }
        let deadline = ContinuousClock.now + .seconds(15)
        var ready = false
        while !ready, ContinuousClock.now < deadline, children.allSatisfy(\.isRunning) {
            try? await Task.sleep(for: .milliseconds(100))
            ready = true
            for port in ports {
                guard let r = await DemoProbe.get(port: port, path: "/readiness"), r.status == 200,
                      let m = await DemoProbe.get(port: port, path: "/ha/status"), m.body.contains(#""alive":\#(ports.count),"#) else {
                    ready = false
                    break
                }
            }
        }
        guard ready else {
            Launcher.printErr("smg: error: the demo routers did not become ready (ports \(ports.map(String.init).joined(separator: ", ")) taken?)")
            stopAll()
            exit(1)
        }
        Launcher.printOut(banner(ports: ports, pids: children.map(\.processIdentifier)))
        for await _ in signals.stream { break }
        stopAll()
        exit(0)
    }

    /// The single-router demo: wait for the first health checks, so the first curl succeeds.
    func waitUntilReady(_ node: RouterNode) async {
        let deadline = ContinuousClock.now + .seconds(5)
        while !node.state.registry.all.allSatisfy(\.isAvailable), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    func banner(ports: [Int], pids: [Int32] = []) -> String {
        let port = ports[0]
        let chat = #"-H 'content-type: application/json' -d '{"model":"sim-model","messages":[{"role":"user","content":"Hello!"}]}'"#
        let stream = #"-d '{"model":"sim-model","stream":true,"messages":[{"role":"user","content":"Hi"}]}'"#
        var lines = [""]
        if ports.count == 1 {
            lines += [
                "smg demo: a router on http://127.0.0.1:\(port) over three simulated workers (model sim-model).",
                "Try:",
                "  curl -s http://127.0.0.1:\(port)/v1/chat/completions \(chat)",
                "  curl -sN http://127.0.0.1:\(port)/v1/chat/completions \(stream)",
                "  curl -s http://127.0.0.1:\(port)/workers",
            ]
        } else {
            let list = ports.map(String.init).joined(separator: ", ")
            let other = ports[1]
            lines += [
                "smg demo: \(ports.count) meshed routers on 127.0.0.1 ports \(list) over three simulated workers (model sim-model).",
                "Any router answers for the cluster. Try:",
                "  curl -s http://127.0.0.1:\(other)/v1/chat/completions \(chat)",
                "  curl -sN http://127.0.0.1:\(port)/v1/chat/completions \(stream)",
                "  watch -n1 curl -s http://127.0.0.1:\(port)/ha/status        # members, traffic, replication",
                "  curl -s -X POST 'http://127.0.0.1:\(other)/add_worker?url=http://127.0.0.1:9'; curl -s http://127.0.0.1:\(ports.last!)/workers",
                "                                   # a worker added through one router is known to all",
                "Kill a router and watch the others see it dead within ~3 s in /ha/status (traffic to the rest goes on):",
                "  kill -9 \(pids.count > 1 ? String(pids[1]) : "<pid>")      # router-2, port \(other)",
            ]
        }
        lines += ["Ctrl-C stops the demo.", ""]
        return lines.joined(separator: "\n")
    }
}
