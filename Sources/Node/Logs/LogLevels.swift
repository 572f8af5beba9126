import Logging

/// `--log-level` and `RUST_LOG`: a default level and levels per module, as directives
/// (`info,mesh=debug,redis=warn`); a plain level (`debug`) is the default for everything. The
/// modules are groups of the code's folders, so an operator can turn one part up without the
/// rest:
///
/// | module | folders | what it logs |
/// |---|---|---|
/// | `server` | Server, HTTP, Pipeline, Admission, Upstream, State | start-up, shutdown, listeners, refused connections; each request answered (debug) |
/// | `mesh` | Mesh, MeshLink, MeshBridge | members joining, leaving and dying, peers found as router pods (info); digests, writes, repairs, full states and tree transfers (debug) |
/// | `workers` | Workers, Services, Control, Discovery, Kubernetes | workers added and removed, health verdicts, circuit breakers, model discovery, file and Kubernetes discovery; each health check (debug) |
/// | `history` | History, Responses | history stores, background writes; each load and save (debug) |
/// | `redis` | Redis, Sessions | Sentinel failovers, sticky sessions; connections opened, closed and failed (debug) |
/// | `security` | Security, TLS | signing keys, certificate reloads |
/// | `upgrade` | Upgrade | in-place upgrades |
///
/// `smg` (or `smg::<module>` and `smg.<module>`, as Rust targets are written) names the router
/// itself. `RUST_LOG` is often written for the reference gateway, whose targets include other
/// crates (`hyper=warn`, `tower_http=debug`): those are left out with a warning, while
/// `--log-level` refuses a module it does not know. Levels: trace, debug, info, warn (warning),
/// error, critical.
public struct LogLevels: Sendable, Equatable {
    public enum Module: String, Sendable, CaseIterable {
        case server, mesh, workers, history, redis, security, upgrade
    }

    public var defaultLevel: Logger.Level
    public var modules: [Module: Logger.Level]
    /// Targets of `RUST_LOG` that are not smg's, left out (the router says so at start-up).
    public var ignoredTargets: [String]

    public init(_ defaultLevel: Logger.Level = .info, modules: [Module: Logger.Level] = [:]) {
        self.defaultLevel = defaultLevel
        self.modules = modules
        self.ignoredTargets = []
    }

    public func level(of module: Module) -> Logger.Level { modules[module] ?? defaultLevel }

    public struct Invalid: Error, Equatable {
        public let message: String
    }

    /// Parses directives. `foreignTargetsAllowed`: targets that are not smg's modules are
    /// collected in `ignoredTargets` instead of refused (`RUST_LOG`).
    public static func parse(_ text: String, foreignTargetsAllowed: Bool = false) throws(Invalid) -> LogLevels {
        var levels = LogLevels()
        var sawDefault = false
        let directives = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard directives.count <= 64 else { throw Invalid(message: "more than 64 directives") }
        for directive in directives where !directive.isEmpty {
            let parts = directive.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.count == 1 {
                // A level alone is the default; a target alone (RUST_LOG's `smg`) means trace for it.
                if let level = Self.level(String(parts[0])) {
                    guard !sawDefault else { throw Invalid(message: "'\(directive)': the default level is given twice") }
                    levels.defaultLevel = level
                    sawDefault = true
                    continue
                }
                try levels.set(target: String(parts[0]), to: .trace, directive: directive, foreignTargetsAllowed: foreignTargetsAllowed)
                continue
            }
            guard let level = Self.level(String(parts[1])) else {
                throw Invalid(message: "'\(directive)': '\(parts[1])' is not a level (trace, debug, info, warn, error, critical)")
            }
            try levels.set(target: String(parts[0]), to: level, directive: directive, foreignTargetsAllowed: foreignTargetsAllowed)
        }
        return levels
    }

    private mutating func set(target raw: String, to level: Logger.Level, directive: String, foreignTargetsAllowed: Bool) throws(Invalid) {
        var target = raw.lowercased()
        for prefix in ["smg::", "smg."] where target.hasPrefix(prefix) {
            // `smg::mesh::swim` names a part of the mesh: its first component is the module.
            target = String(target.dropFirst(prefix.count).prefix { $0 != ":" && $0 != "." })
        }
        if target == "smg" {
            defaultLevel = level
            return
        }
        if let module = Module(rawValue: target) {
            modules[module] = level
            return
        }
        guard foreignTargetsAllowed, !target.isEmpty, target.count <= 128 else {
            throw Invalid(message: "'\(directive)': '\(raw)' is not a module of smg (\(Module.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        ignoredTargets.append(raw)
    }

    static func level(_ name: String) -> Logger.Level? {
        switch name.lowercased() {
        case "trace": .trace
        case "debug": .debug
        case "info": .info
        case "warn", "warning": .warning
        case "error": .error
        case "critical": .critical
        default: nil
        }
    }
}

extension Logger {
    /// This logger for one module: its level from `levels`, and `module` on every line.
    public func module(_ module: LogLevels.Module, _ levels: LogLevels) -> Logger {
        var logger = self
        logger.logLevel = levels.level(of: module)
        logger[metadataKey: "module"] = "\(module.rawValue)"
        return logger
    }
}
