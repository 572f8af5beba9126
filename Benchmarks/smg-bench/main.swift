import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

// smg-bench: load against a real `smg` (release build) over simulated workers, printing
// requests/s, latency percentiles, the router's CPU µs per request and its peak RSS, and the
// same load sent straight to a worker for comparison. A program that prints numbers, not a test.

struct Options {
    var requests = 100_000
    var warmup = 2_000
    var concurrency = 32
    var workers = 2
    var stream = false
    var streamTokens = 16
    var direct = true
    var policy = "round_robin"
    /// Requests per second, evenly spaced; nil: as fast as the connections go (saturated).
    var rate: Double?
    /// The router to measure, instead of this build's `smg` (for example the reference gateway's
    /// `smg launch`); the standard flags are appended.
    var routerCommand: [String]?
    var binDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    /// Another endpoint and body than the chat completion (e.g. `/v1/conversations` and `{}`).
    var path = "/v1/chat/completions"
    var body: String?
    /// Extra flags for the router (e.g. `--history-backend redis --redis-url redis://…`).
    var routerArgs: [String] = []
    /// HTTPS between the load generator and the router.
    var tlsClients = false
    /// https:// workers (the router verifies them against a CA made for the run).
    var tlsWorkers = false
    /// Every request a different prompt of about this many bytes (its number first, so prompts
    /// part at the first block): fills a cache-aware tree the way distinct conversations do.
    var uniquePromptBytes: Int?
    /// A system prompt of this many bytes shared by every unique prompt (a prefix trees share).
    var sharedPrefixBytes = 0
    /// After the run, start a second router meshed with the first and measure what joining
    /// costs: bytes received, time until its tree matches, the first router's peak RSS.
    var join = false
    /// The measured router meshed with a second one (same workers and policy) during the load:
    /// what replication costs each of them per request.
    var meshed = false
    /// Prefill/decode disaggregation: `--workers` prefill and as many decode simulated workers,
    /// the router in `--pd-disaggregation` mode (every request two legs).
    var pd = false

    static func parse() -> Options {
        var o = Options()
        var args = Array(CommandLine.arguments.dropFirst())
        func next(_ flag: String) -> String {
            guard !args.isEmpty else { fail("\(flag) needs a value") }
            return args.removeFirst()
        }
        func int(_ flag: String) -> Int {
            guard let v = Int(next(flag)), v > 0 else { fail("\(flag) needs a positive integer") }
            return v
        }
        while !args.isEmpty {
            let a = args.removeFirst()
            switch a {
            case "--requests": o.requests = int(a)
            case "--warmup": o.warmup = int(a)
            case "--concurrency": o.concurrency = int(a)
            case "--workers": o.workers = int(a)
            case "--stream": o.stream = true
            case "--stream-tokens": o.streamTokens = int(a)
            case "--no-direct": o.direct = false
            case "--policy": o.policy = next(a)
            case "--bin-dir": o.binDir = next(a)
            case "--rate": o.rate = Double(int(a))
            case "--router-cmd": o.routerCommand = next(a).split(separator: " ").map(String.init)
            case "--path": o.path = next(a)
            case "--body": o.body = next(a)
            case "--router-args": o.routerArgs = next(a).split(separator: " ").map(String.init)
            case "--unique-prompts": o.uniquePromptBytes = int(a)
            case "--shared-prefix": o.sharedPrefixBytes = int(a)
            case "--join": o.join = true
            case "--meshed": o.meshed = true
            case "--pd": o.pd = true
            case "--tls":
                switch next(a) {
                case "clients": o.tlsClients = true
                case "workers": o.tlsWorkers = true
                case "both": o.tlsClients = true; o.tlsWorkers = true
                default: fail("--tls takes clients, workers or both")
                }
            case "-h", "--help":
                print("smg-bench [--requests N] [--warmup N] [--concurrency C] [--workers W] [--stream] [--stream-tokens T] [--policy P] [--rate R] [--router-cmd CMD] [--tls clients|workers|both] [--path P] [--body JSON] [--router-args FLAGS] [--unique-prompts BYTES] [--shared-prefix BYTES] [--join] [--meshed] [--pd] [--no-direct] [--bin-dir DIR]")
                exit(0)
            default: fail("unknown flag \(a)")
            }
        }
        return o
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("smg-bench: \(message)\n".utf8))
    // Nothing this run started outlives it.
    for child in Child.started { child.stop() }
    exit(2)
}

/// A child process whose stdout we read for its ready line.
final class Child {
    /// Every child started so far, stopped by `fail` on the way out.
    nonisolated(unsafe) static var started: [Child] = []
    let process = Process()
    let pipe = Pipe()
    init(_ path: String, _ args: [String], captureOutput: Bool = true) {
        process.executableURL = URL(fileURLWithPath: Child.resolve(path))
        process.arguments = args
        process.standardOutput = captureOutput ? pipe : FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { fail("cannot start \(path): \(error.localizedDescription)") }
        Child.started.append(self)
    }

    /// A command name without a slash is looked up on PATH, as a shell would.
    static func resolve(_ command: String) -> String {
        guard !command.contains("/") else { return command }
        let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        return dirs.map { "\($0)/\(command)" }.first { FileManager.default.isExecutableFile(atPath: $0) } ?? command
    }
    func waitFor(_ marker: String) -> String {
        var seen = ""
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let d = pipe.fileHandleForReading.availableData
            if d.isEmpty { break }
            seen += String(decoding: d, as: UTF8.self)
            if let line = seen.split(separator: "\n").first(where: { $0.contains(marker) }) { return String(line) }
        }
        process.terminate()
        fail("\(process.executableURL!.lastPathComponent) did not print '\(marker)': \(seen)")
    }
    func stop() { if process.isRunning { process.terminate(); process.waitUntilExit() } }
}

/// A port free right now on 127.0.0.1 (for routers that cannot bind port 0 and say which).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len); return getsockname(fd, $0, &len) }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// The whole answer to `GET path` on 127.0.0.1:port (plain HTTP, one second to answer), or nil
/// when nothing answers.
func httpGet(port: Int, path: String) -> String? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var tv = timeval(tv_sec: 1, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { return nil }
    let request = Array("GET \(path) HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n".utf8)
    guard send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else { return nil }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        out += buffer[0..<n]
    }
    return out.isEmpty ? nil : String(decoding: out, as: UTF8.self)
}

/// The HTTP status of `GET path` on 127.0.0.1:port, or nil when nothing answers.
func httpStatus(port: Int, path: String) -> Int? {
    guard let answer = httpGet(port: port, path: path), answer.utf8.count >= 12 else { return nil }
    return Int(answer.dropFirst(9).prefix(3))
}

/// The body of `GET path` (plain HTTP), nil when the server does not answer.
func httpBody(port: Int, path: String) -> String? {
    guard let answer = httpGet(port: port, path: path), let split = answer.range(of: "\r\n\r\n") else { return nil }
    return String(answer[split.upperBound...])
}

/// A CA and one certificate for 127.0.0.1 (server and client use), made with `openssl` for one
/// run in a temporary directory.
final class BenchPKI {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smg-bench-pki-\(UUID().uuidString)").path
    var caPath: String { dir + "/ca.pem" }
    var certPath: String { dir + "/leaf-chain.pem" }
    var keyPath: String { dir + "/leaf.key" }

    init() {
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/ext.cnf", contents: Data("subjectAltName=IP:127.0.0.1,DNS:localhost\n".utf8))
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        for args in [["req", "-x509"] + ec + ["-keyout", dir + "/ca.key", "-out", caPath, "-days", "1", "-subj", "/CN=smg-bench CA"],
                     ["req"] + ec + ["-keyout", keyPath, "-out", dir + "/leaf.csr", "-subj", "/CN=127.0.0.1"],
                     ["x509", "-req", "-in", dir + "/leaf.csr", "-CA", caPath, "-CAkey", dir + "/ca.key", "-CAcreateserial",
                      "-out", dir + "/leaf.pem", "-days", "1", "-extfile", dir + "/ext.cnf"]] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            p.arguments = args
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            do { try p.run() } catch { fail("the TLS modes need openssl (/usr/bin/openssl): \(error)") }
            p.waitUntilExit()
            guard p.terminationStatus == 0 else { fail("openssl \(args.joined(separator: " ")) failed") }
        }
        let chain = ((try? String(contentsOfFile: dir + "/leaf.pem", encoding: .utf8)) ?? "") + ((try? String(contentsOfFile: caPath, encoding: .utf8)) ?? "")
        _ = FileManager.default.createFile(atPath: certPath, contents: Data(chain.utf8))
    }

    func clientContext() throws -> NIOSSLContext {
        var c = TLSConfiguration.makeClientConfiguration()
        c.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caPath))
        return try NIOSSLContext(configuration: c)
    }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }
}

func port(in line: Substring) -> Int {
    Int(line.split(separator: ":").last!.prefix { $0.isNumber })!
}

/// CPU seconds (user+system) and peak RSS of a process, from /proc.
func usage(pid: Int32) -> (cpu: Double, peakRSSKiB: Int) {
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    let fields = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    let cpu = (Double(fields[11]) ?? 0) / ticks + (Double(fields[12]) ?? 0) / ticks
    let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
    let hwm = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }.map { Int($0.split(separator: " ")[1]) ?? 0 } ?? 0
    return (cpu, hwm)
}

/// One keep-alive client connection that sends the same request back to back.
final class LoadConnection: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let shared: LoadState
    var sentAt: UInt64 = 0
    init(shared: LoadState) { self.shared = shared }

    func channelActive(context: ChannelHandlerContext) { sendNext(context) }

    func sendNext(_ context: ChannelHandlerContext) {
        guard let slot = shared.take() else { context.close(promise: nil); return }
        if let due = shared.due(slot), due > DispatchTime.now().uptimeNanoseconds {
            // Paced: this request's slot is still ahead.
            context.eventLoop.assumeIsolated().scheduleTask(deadline: NIODeadline.uptimeNanoseconds(due)) { self.send(context, slot) }
            return
        }
        send(context, slot)
    }

    func send(_ context: ChannelHandlerContext, _ slot: Int) {
        sentAt = DispatchTime.now().uptimeNanoseconds
        let (head, body) = shared.request(slot)
        context.write(NIOAny(HTTPClientRequestPart.head(head)), promise: nil)
        context.write(NIOAny(HTTPClientRequestPart.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(NIOAny(HTTPClientRequestPart.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): if h.status != .ok { shared.errors += 1 }
        case .body: break
        case .end:
            shared.record(DispatchTime.now().uptimeNanoseconds - sentAt)
            sendNext(context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) { shared.connectionClosed() }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { shared.errors += 1; context.close(promise: nil) }
}

/// Counters of one load run; touched only on the single load-generator event loop.
final class LoadState: @unchecked Sendable {
    let head: HTTPRequestHead
    let body: Bodies
    var remaining: Int
    var taken = 0
    /// Nanoseconds between paced requests, and when the first is due.
    let spacing: UInt64?
    let start = DispatchTime.now().uptimeNanoseconds
    var latencies: [UInt64] = []
    var errors = 0
    var open: Int
    let done: EventLoopPromise<Void>
    init(head: HTTPRequestHead, body: Bodies, count: Int, connections: Int, rate: Double?, done: EventLoopPromise<Void>) {
        self.spacing = rate.map { UInt64(1e9 / $0) }
        self.head = head
        self.body = body
        self.remaining = count
        self.open = connections
        self.done = done
        latencies.reserveCapacity(count)
    }
    /// The next request's slot number, or nil when all are sent.
    func take() -> Int? {
        guard remaining > 0 else { return nil }
        remaining -= 1
        taken += 1
        return taken - 1
    }
    /// The head and body of request number `slot`.
    func request(_ slot: Int) -> (HTTPRequestHead, ByteBuffer) {
        switch body {
        case .same(let b): return (head, b)
        case .numbered(let first, let make):
            let b = ByteBuffer(string: make(first + slot))
            var h = head
            h.headers.replaceOrAdd(name: "content-length", value: String(b.readableBytes))
            return (h, b)
        }
    }
    func due(_ slot: Int) -> UInt64? { spacing.map { start + UInt64(slot) * $0 } }
    func record(_ ns: UInt64) { latencies.append(ns) }
    func connectionClosed() { open -= 1; if open == 0 { done.succeed(()) } }
}

struct RunResult {
    var seconds: Double
    var latencies: [UInt64]
    var errors: Int
    var rps: Double { Double(latencies.count) / seconds }
    func percentile(_ p: Double) -> Double {
        guard !latencies.isEmpty else { return 0 }
        let sorted = latencies.sorted()
        return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1e6
    }
}

/// What each request sends: one body for all, or a body made from the request's number.
enum Bodies {
    case same(ByteBuffer)
    case numbered(first: Int, @Sendable (Int) -> String)
}

func run(port: Int, body: String, path: String, count: Int, concurrency: Int, rate: Double? = nil, tls: NIOSSLContext? = nil,
         group: any EventLoopGroup) throws -> RunResult {
    try run(port: port, bodies: .same(ByteBuffer(string: body)), path: path, count: count, concurrency: concurrency, rate: rate, tls: tls, group: group)
}

func run(port: Int, bodies: Bodies, path: String, count: Int, concurrency: Int, rate: Double? = nil, tls: NIOSSLContext? = nil,
         group: any EventLoopGroup) throws -> RunResult {
    let loop = group.next()
    var length = 0
    if case .same(let b) = bodies { length = b.readableBytes }
    let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path,
                               headers: ["host": "127.0.0.1", "content-type": "application/json", "content-length": String(length)])
    let done = loop.makePromise(of: Void.self)
    let state = LoadState(head: head, body: bodies, count: count, connections: concurrency, rate: rate, done: done)
    let start = DispatchTime.now().uptimeNanoseconds
    for _ in 0..<concurrency {
        _ = ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    if let tls { try ch.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: nil)) }
                    try ch.pipeline.syncOperations.addHTTPClientHandlers(leftOverBytesStrategy: .dropBytes)
                    try ch.pipeline.syncOperations.addHandler(LoadConnection(shared: state))
                }
            }
            .connect(host: "127.0.0.1", port: port)
    }
    try done.futureResult.wait()
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    return try loop.submit { RunResult(seconds: seconds, latencies: state.latencies, errors: state.errors) }.wait()
}

let o = Options.parse()
let simPath = o.binDir + "/smg-sim-worker"
let smgPath = o.binDir + "/smg"
for p in [simPath, smgPath] where !FileManager.default.isExecutableFile(atPath: p) {
    fail("\(p) not found: build with `swift build -c release` first, or pass --bin-dir")
}
let tokens = o.stream ? o.streamTokens : 16
// Certificates for the TLS modes, made for this run (openssl) and removed at the end.
let pki = (o.tlsClients || o.tlsWorkers) ? BenchPKI() : nil
var workers: [Child] = []
var urls: [String] = []
/// With --pd: the router's worker flags (`--prefill URL PORT` per prefill, `--decode URL` per decode).
var pdFlags: [String] = []
for i in 0..<(o.pd ? 2 * o.workers : o.workers) {
    let tlsFlags = o.tlsWorkers ? ["--tls-cert", pki!.certPath, "--tls-key", pki!.keyPath] : []
    let role = !o.pd ? [] : i < o.workers ? ["--role", "prefill", "--bootstrap-port", "0"] : ["--role", "decode"]
    let w = Child(simPath, ["--port", "0", "--name", "w\(i)", "--output-tokens", String(tokens), "--cache-capacity-blocks", "0"] + tlsFlags + role)
    let line = w.waitFor("listening on")
    let url = "\(o.tlsWorkers ? "https" : "http")://127.0.0.1:\(port(in: line.split(separator: " ")[3]))"
    if o.pd {
        let bootstrap = line.split(separator: " ").first { $0.hasPrefix("bootstrap=") }.map { String($0.dropFirst(10)) }
        pdFlags += bootstrap.map { ["--prefill", url, $0] } ?? ["--decode", url]
    } else {
        urls.append(url)
    }
    workers.append(w)
}
// The router: this build's smg, or any command that takes the gateway's flags.
let smgPort = freePort()
let metricsPort = freePort()
let routerCommand = o.routerCommand ?? [smgPath]
let tlsFlags = (o.tlsClients ? ["--tls-cert-path", pki!.certPath, "--tls-key-path", pki!.keyPath] : [])
    + (o.tlsWorkers ? ["--ca-cert-paths", pki!.caPath] : [])
// --join: the measured router is meshed (with a cluster key made for the run) with a second one
// started after the load.
let joinMesh = o.join || o.meshed ? JoinMesh(smgPath: smgPath) : nil
let smg = Child(routerCommand[0], Array(routerCommand.dropFirst()) + tlsFlags + o.routerArgs + (joinMesh?.flags(name: "a") ?? []) + [
    "--host", "127.0.0.1", "--port", String(smgPort), "--prometheus-host", "127.0.0.1", "--prometheus-port", String(metricsPort),
    "--policy", o.policy, "--log-level", "warn"] + (o.pd ? ["--pd-disaggregation"] + pdFlags : ["--worker-urls"] + urls), captureOutput: false)
let readyBy = Date().addingTimeInterval(60)
// Over HTTPS the plain readiness probe cannot ask; the metrics port (plain) says when a worker is healthy.
func routerReady() -> Bool {
    o.tlsClients ? (httpBody(port: metricsPort, path: "/metrics")?.split(separator: "\n").contains { $0.hasPrefix("smg_worker_health{") && $0.hasSuffix(" 1") } == true) : httpStatus(port: smgPort, path: "/readiness") == 200
}
while !routerReady() {
    guard Date() < readyBy, smg.process.isRunning else { smg.stop(); fail("the router did not become ready on port \(smgPort)") }
    usleep(100_000)
}
// Router b's flags besides its mesh flags: a's, with the same workers and policy.
let peerArgs = tlsFlags + o.routerArgs + ["--policy", o.policy, "--log-level", "warn"] + (o.pd ? ["--pd-disaggregation"] + pdFlags : ["--worker-urls"] + urls)
// --meshed: router b joins a's mesh now, before the load, and the run waits until a sees it.
let peer = o.meshed ? joinMesh!.startPeer(args: peerArgs, awaitedBy: smgPort) : nil
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let clientTLS: NIOSSLContext? = o.tlsClients ? try pki!.clientContext() : nil
let body = o.body ?? #"{"model":"sim-model","stream":\#(o.stream),"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one sentence about routers."}]}"#
let path = o.path
/// Request number `n`'s body when every prompt is different.
let uniqueBody: (@Sendable (Int) -> String)? = o.uniquePromptBytes.map { bytes in
    let filler = String(repeating: "Tell me more about request routing and caches. ", count: bytes / 48 + 1)
    let system = o.sharedPrefixBytes > 0
        ? #"{"role":"system","content":"\#(String(repeating: "You are a helpful assistant. ", count: o.sharedPrefixBytes / 29 + 1).prefix(o.sharedPrefixBytes))"},"#
        : ""
    let stream = o.stream
    return { n in
        let prompt = "\(n) \(filler)".prefix(bytes)
        return #"{"model":"sim-model","stream":\#(stream),"messages":[\#(system){"role":"user","content":"\#(prompt)"}]}"#
    }
}
func bodies(first: Int) -> Bodies { uniqueBody.map { .numbered(first: first, $0) } ?? .same(ByteBuffer(string: body)) }

let tlsLabel = o.tlsClients && o.tlsWorkers ? "HTTPS clients and https workers, " : o.tlsClients ? "HTTPS clients, " : o.tlsWorkers ? "https workers, " : ""
print("smg-bench: \(routerCommand.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: " ")) --policy \(o.policy), \(tlsLabel)\(o.rate.map { "\(Int($0)) requests/s, " } ?? "saturated, ")\(o.path != "/v1/chat/completions" ? "POST \(o.path)" : (o.stream ? "streaming (\(tokens) SSE events per response) chat completions" : "non-streaming chat completions")), \(o.requests) requests, \(o.concurrency) connections, \(o.pd ? "PD: \(o.workers) prefill + \(o.workers) decode" : "\(o.workers)") simulated workers, \(ProcessInfo.processInfo.activeProcessorCount) cores")
_ = try run(port: smgPort, bodies: bodies(first: 0), path: path, count: o.warmup, concurrency: o.concurrency, tls: clientTLS, group: group)
/// The workers' CPU seconds together: what the same process model (one NIO event loop answering
/// HTTP) costs per request on this machine, beside the router's.
@MainActor func workersCPU() -> Double { workers.reduce(0) { $0 + usage(pid: $1.process.processIdentifier).cpu } }
let before = usage(pid: smg.process.processIdentifier)
let workersBefore = workersCPU()
let peerBefore = peer.map { usage(pid: $0.process.processIdentifier).cpu }
let r = try run(port: smgPort, bodies: bodies(first: o.warmup), path: path, count: o.requests, concurrency: o.concurrency, rate: o.rate, tls: clientTLS, group: group)
let after = usage(pid: smg.process.processIdentifier)
let workersAfter = workersCPU()
let peerAfter = peer.map { usage(pid: $0.process.processIdentifier).cpu }
let cpuPerRequest = (after.cpu - before.cpu) / Double(r.latencies.count) * 1e6
print(String(format: "through smg:   %8.0f req/s   p50 %6.2f ms   p99 %6.2f ms   errors %d", r.rps, r.percentile(0.5), r.percentile(0.99), r.errors))
print(String(format: "router CPU:    %8.1f µs/request (%.2f CPU-seconds for %d requests)", cpuPerRequest, after.cpu - before.cpu, r.latencies.count))
print(String(format: "router RSS:    %8.1f MiB peak after %d requests", Double(after.peakRSSKiB) / 1024, o.warmup + r.latencies.count))
print(String(format: "workers CPU:   %8.1f µs/request (all %d together)", (workersAfter - workersBefore) / Double(r.latencies.count) * 1e6, workers.count))
if let peerBefore, let peerAfter {
    print(String(format: "peer CPU:      %8.1f µs/request (router b, idle but for a's replicated decisions)", (peerAfter - peerBefore) / Double(r.latencies.count) * 1e6))
    peer?.stop()
}
if let joinMesh, o.join {
    joinMesh.measure(first: smg, metricsPort: metricsPort, args: peerArgs)
}
if o.direct, !o.tlsWorkers, !o.pd {
    let workerBefore = usage(pid: workers[0].process.processIdentifier).cpu
    let d = try run(port: port(in: Substring(urls[0])), body: body, path: path, count: o.requests, concurrency: o.concurrency, rate: o.rate, group: group)
    let workerAfter = usage(pid: workers[0].process.processIdentifier).cpu
    print(String(format: "direct to one worker: %8.0f req/s   p50 %6.2f ms   p99 %6.2f ms   (smg/direct throughput %.2f)", d.rps, d.percentile(0.5), d.percentile(0.99), r.rps / d.rps))
    print(String(format: "that worker's CPU: %6.1f µs/request", (workerAfter - workerBefore) / Double(d.latencies.count) * 1e6))
}
smg.stop()
for w in workers { w.stop() }
pki?.remove()
try? group.syncShutdownGracefully()
