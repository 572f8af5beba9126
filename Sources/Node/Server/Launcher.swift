import Foundation
import Logging

/// What `smg` does with its command line: parse, validate, start, wait for a signal, drain.
/// Kept in the library so the executable stays a few lines and tests can reach the pieces.
public enum Launcher {
    public static let version = "0.1.0"

    public enum Command {
        case help, version, configReference, meshKeygen
        case run(arguments: [String])
        case demo(arguments: [String])
    }

    public static func command(_ args: [String]) -> Command {
        var rest = args
        if rest.first == "launch" { rest.removeFirst() }
        if rest.contains("--help") || rest.contains("-h") || rest.first == "help" { return .help }
        if rest.first == "--version" || rest.first == "version" { return .version }
        if rest.first == "config-reference" { return .configReference }
        if rest.first == "mesh-keygen" { return .meshKeygen }
        if rest.first == "demo" { return .demo(arguments: Array(rest.dropFirst())) }
        return .run(arguments: rest)
    }

    /// Where the router's log goes: one line per event to stderr, at `--log-level`, as text or
    /// (`--log-json`) JSON; with `--log-dir` the same lines also to a file per day there.
    public struct LogOutput: Sendable {
        public let logger: Logger
        let file: DailyLogFile?
        /// Waits until every line is in its file (call before the process exits).
        public func flush() { file?.flush() }
    }

    public static func makeLogger(level: Logger.Level, json: Bool = false, directory: String? = nil) throws(ConfigError) -> LogOutput {
        let file = try directory.map { dir throws(ConfigError) in try DailyLogFile(directory: dir) }
        var logger = Logger(label: "smg") { label in
            let console: any LogHandler = json ? JSONLogHandler(label: label, stream: StandardErrorStream()) : StreamLogHandler.standardError(label: label)
            guard let file else { return console }
            let toFile: any LogHandler = json ? JSONLogHandler(label: label, stream: file.stream) : StreamLogHandler(label: label, stream: file.stream)
            return MultiplexLogHandler([console, toFile])
        }
        logger.logLevel = level
        return LogOutput(logger: logger, file: file)
    }

    /// SIGTERM and SIGINT (drain and stop) as one stream, SIGHUP (reload certificates) as
    /// another, SIGUSR2 (start an in-place upgrade) as a third, handed to the router's service
    /// group (`RouterNode.start(reloads:upgrades:)`). Installed
    /// before the router announces readiness, so a signal sent right after the ready line drains
    /// instead of killing the process (the group itself only listens once it runs).
    public final class Signals: @unchecked Sendable {
        public let stream: AsyncStream<Int32>
        public let reloads: AsyncStream<Void>
        public let upgrades: AsyncStream<Void>
        private let sources: [any DispatchSourceSignal]

        private let parentWatch: (any DispatchSourceTimer)?

        /// `exitWithParent`: the process that started this one (`smg demo`); when it is gone
        /// (this process was handed to another parent), it counts as a SIGTERM.
        public init(exitWithParent parent: Int32? = nil) {
            let (stream, continuation) = AsyncStream<Int32>.makeStream()
            // A reload asked for while one waits is the same reload.
            let (reloads, reload) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
            let (upgrades, upgrade) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
            var sources: [any DispatchSourceSignal] = []
            for sig in [SIGTERM, SIGINT, SIGHUP, SIGUSR2] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler {
                    switch sig {
                    case SIGHUP: reload.yield()
                    case SIGUSR2: upgrade.yield()
                    default: continuation.yield(sig)
                    }
                }
                source.resume()
                sources.append(source)
            }
            if let parent {
                let timer = DispatchSource.makeTimerSource(queue: .global())
                timer.schedule(deadline: .now() + 0.5, repeating: 0.5)
                timer.setEventHandler { if getppid() != parent { continuation.yield(SIGTERM) } }
                timer.resume()
                parentWatch = timer
            } else {
                parentWatch = nil
            }
            self.stream = stream
            self.reloads = reloads
            self.upgrades = upgrades
            self.sources = sources
        }
    }

    /// Serves until SIGTERM or SIGINT, then drains and returns once every service has stopped.
    /// (SIGHUP is the group's: its certificate reload service.)
    public static func serve(_ node: RouterNode, until signals: Signals) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await sig in signals.stream {
                    node.state.logger.info("signal received", metadata: ["signal": "\(sig == SIGTERM ? "SIGTERM" : "SIGINT")"])
                    await node.shutdown()
                    return
                }
            }
            try? await node.run()
            // The node stopped without a signal (a service failed): stop waiting for one.
            group.cancelAll()
        }
    }

    /// The line tests and scripts wait for: where the router listens.
    public static func readyLine(_ node: RouterNode, host: String) -> String {
        let shown = host == "0.0.0.0" || host == "::" ? "127.0.0.1" : host
        let scheme = node.state.tls.settings.server == nil ? "http" : "https"
        return "smg ready: api=\(scheme)://\(shown):\(node.apiPort) metrics=http://\(shown):\(node.metricsPort)/metrics workers=\(node.state.registry.all.count) policy=\(node.state.config.policy.rawValue)"
    }

    public static func printOut(_ s: String) { FileHandle.standardOutput.write(Data((s + "\n").utf8)) }
    public static func printErr(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }
}
