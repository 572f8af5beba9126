import Foundation
import Logging
import Node
import NIOPosix
import SimWorker
import TestSupport

/// What tests do with a router, whether it runs as the `smg` binary (`RouterProcess`) or in this
/// process (`InProcessRouter`): real HTTP on loopback either way.
protocol RouterUnderTest: AnyObject {
    var port: Int { get }
    var metricsPort: Int { get }
}

extension RouterUnderTest {
    func request(_ method: String, _ path: String, body: String? = nil, headers: [(String, String)] = []) throws -> HTTPResponse {
        try HTTPClient.request(port: port, method: method, path: path, headers: headers, body: body.map { Array($0.utf8) })
    }

    func chat(_ content: String, model: String? = nil, stream: Bool = false, headers: [(String, String)] = []) throws -> HTTPResponse {
        let m = model.map { #""model":"\#($0)","# } ?? ""
        return try request("POST", "/v1/chat/completions", body: #"{\#(m)"stream":\#(stream),"messages":[{"role":"user","content":"\#(content)"}]}"#, headers: headers)
    }

    func metrics() throws -> String {
        String(decoding: try HTTPClient.request(port: metricsPort, method: "GET", path: "/metrics").body, as: UTF8.self)
    }

    /// The value of one sample line of /metrics (`name{labels}`), 0 when absent.
    func metric(_ sample: String) throws -> Double { metricSample(sample, in: try metrics()) }

    /// With start-up workers, waits until the first health check made one of them usable.
    func waitForStartupWorkers(_ arguments: [String]) async throws {
        guard let i = arguments.firstIndex(of: "--worker-urls"), i + 1 < arguments.count, !arguments[i + 1].hasPrefix("--") else { return }
        let port = self.port
        try await eventually(timeout: .seconds(15), "a start-up worker is healthy") {
            try HTTPClient.request(port: port, method: "GET", path: "/readiness").status == 200
        }
    }
}

/// What tests do with a simulated worker, as a process (`SimWorkerProcess`) or in this one
/// (`InProcessWorker`): its own HTTP routes.
protocol SimWorkerUnderTest: AnyObject {
    var port: Int { get }
}

extension SimWorkerUnderTest {
    /// Changes the worker's failure injection at run time (`POST /sim/config`).
    func setFaults(_ query: String) throws {
        _ = try HTTPClient.request(port: port, method: "POST", path: "/sim/config?" + query)
    }

    /// The worker's own counters (`GET /sim/stats`).
    func stats() throws -> [String: Int] {
        let r = try HTTPClient.request(port: port, method: "GET", path: "/sim/stats")
        return (try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Int]) ?? [:]
    }
}

/// The whole router in this process, on its own event loop, with the same command line the
/// binary takes: for tests of what a client sees over HTTP that need no process of their own
/// (no signal, no kill, no log lines, no exit code). It starts in milliseconds instead of a
/// process launch, and goes when the test lets go of it (graceful shutdown, 1 s of grace).
final class InProcessRouter: RouterUnderTest, @unchecked Sendable {
    let node: RouterNode
    let port: Int
    let metricsPort: Int
    private let running: Task<Void, Never>

    init(_ arguments: [String], waitForWorkers: Bool = true, tracing: TracingBackend? = nil) async throws {
        var args = ["--host", "127.0.0.1", "--port", "0", "--prometheus-host", "127.0.0.1", "--prometheus-port", "0"]
        if !arguments.contains("--shutdown-grace-period-secs") { args += ["--shutdown-grace-period-secs", "1"] }
        signal(SIGPIPE, SIG_IGN)  // as the binary does: a client gone mid-write is an error, not the end
        let config = try RouterConfig.load(arguments: args + arguments, environment: [:])
        let node = try await RouterNode.start(config: config, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), threads: 1,
                                              tracing: tracing)
        self.node = node
        port = node.apiPort
        metricsPort = node.metricsPort
        running = Task { try? await node.run() }
        if waitForWorkers { try await waitForStartupWorkers(arguments) }
    }

    deinit {
        let (node, running) = (node, running)
        Task {
            await node.shutdown()
            await running.value
        }
    }
}

/// A simulated worker in this process, with the command line of `smg-sim-worker`.
final class InProcessWorker: SimWorkerUnderTest, @unchecked Sendable {
    let server: SimWorkerServer
    var url: String { server.url }
    var port: Int { server.port }
    var bootstrapPort: Int? { server.bootstrapPort }

    /// `host` may be any loopback address (127.0.0.0/8): pods of a discovery test each have one,
    /// all on one port.
    init(name: String, host: String = "127.0.0.1", port: Int = 0, _ extra: [String] = []) async throws {
        signal(SIGPIPE, SIG_IGN)
        var options = try SimWorkerOptions.parse(["--name", name, "--port", "\(port)"] + extra)
        options.host = host
        server = try await SimWorkerServer.start(options, group: MultiThreadedEventLoopGroup.singleton)
    }

    deinit {
        let server = server
        Task { await server.close() }
    }
}
