import Foundation
import Logging
import ServiceLifecycle

/// SIGUSR2: start the successor of an in-place upgrade, the same command line run again (the
/// binary at the path this one was started from, which an upgrade has replaced). It finds this
/// router on `--takeover-socket` and takes over; this router drains and exits once it serves.
/// This is how `systemctl reload smg` upgrades (smg.service: `ExecReload=kill -USR2 $MAINPID`;
/// the successor tells systemd it is the main process now, `SystemdNotify`).
///
/// One successor at a time: a signal while one starts is ignored. A successor that exits before
/// it took over is logged, and this router serves on.
struct SuccessorLauncher: Service, CustomStringConvertible {
    let requests: AsyncStream<Void>
    /// The command line this process was started with (`CommandLine.arguments`).
    let commandLine: [String]
    let takeoverSocket: String?
    let logger: Logger
    var description: String { "upgrade signal" }

    func run() async {
        var successor: Process?
        for await _ in requests.cancelOnGracefulShutdown() {
            logger.info("signal received", metadata: ["signal": "SIGUSR2"])
            guard takeoverSocket != nil else {
                logger.warning("SIGUSR2 starts an in-place upgrade, which needs --takeover-socket; nothing done")
                continue
            }
            guard successor?.isRunning != true else {
                logger.warning("SIGUSR2: a successor is starting already; nothing done")
                continue
            }
            successor = start()
        }
    }

    private func start() -> Process? {
        guard let executable = Self.resolve(commandLine.first ?? "") else {
            logger.error("in-place upgrade: cannot find the executable to start", metadata: ["argv0": "\(commandLine.first ?? "")"])
            return nil
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = Array(commandLine.dropFirst())
        process.standardInput = FileHandle.nullDevice
        let logger = logger
        process.terminationHandler = { p in
            // Exiting is the normal end of a successor only once it has been superseded itself;
            // while this router still runs, it means the successor failed to start.
            logger.error("in-place upgrade: the successor exited", metadata: ["pid": "\(p.processIdentifier)", "status": "\(p.terminationStatus)"])
        }
        do {
            try process.run()
            logger.info("in-place upgrade: successor started", metadata: ["pid": "\(process.processIdentifier)", "executable": "\(executable)"])
            return process
        } catch {
            logger.error("in-place upgrade: cannot start the successor", metadata: ["executable": "\(executable)", "error": "\(error)"])
            return nil
        }
    }

    /// `argv[0]` as a path: as given when it has a slash (this process never changes its
    /// directory), else the first match on `PATH`.
    static func resolve(_ argv0: String, path: String? = ProcessInfo.processInfo.environment["PATH"]) -> String? {
        guard !argv0.isEmpty else { return nil }
        if argv0.contains("/") { return FileManager.default.isExecutableFile(atPath: argv0) ? argv0 : nil }
        for dir in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(dir)/\(argv0)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
