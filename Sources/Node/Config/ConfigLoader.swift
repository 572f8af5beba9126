import Foundation
import Yams

/// The effective value of every flag and where it came from.
public struct ResolvedFlags: Sendable {
    public private(set) var values: [String: (value: FlagValue, source: FlagSource)] = [:]

    mutating func set(_ name: String, _ value: FlagValue, from source: FlagSource) {
        if let existing = values[name], existing.source > source { return }
        values[name] = (value, source)
    }

    public func value(_ name: String) -> FlagValue? { values[name]?.value }
    public func source(_ name: String) -> FlagSource { values[name]?.source ?? .defaultValue }
    /// Given on the command line, in the environment or in the config file.
    public func isExplicit(_ name: String) -> Bool { source(name) != .defaultValue }

    public func string(_ n: String) -> String? { if case .string(let s)? = value(n) { return s }; return nil }
    public func int(_ n: String) -> Int? { if case .int(let i)? = value(n) { return i }; return nil }
    public func double(_ n: String) -> Double? { if case .double(let d)? = value(n) { return d }; return nil }
    public func bool(_ n: String) -> Bool { if case .bool(let b)? = value(n) { return b }; return false }
    public func list(_ n: String) -> [String] { if case .list(let l)? = value(n) { return l }; return [] }

    // Flags whose default `FlagTable` states: the value is always there, and no caller states
    // the default a second time. A flag without one is a programming error, caught by any test.
    func stringWithDefault(_ n: String) -> String { withDefault(n, string(n)) }
    func doubleWithDefault(_ n: String) -> Double { withDefault(n, double(n)) }
    func intWithDefault(_ n: String) -> Int { withDefault(n, int(n)) }
    private func withDefault<T>(_ n: String, _ v: T?) -> T {
        guard let v else { preconditionFailure("--\(n) has no default in FlagTable") }
        return v
    }
}

/// Reads flags from the command line, the environment and a YAML file, and merges them with
/// the defaults in `FlagTable` (command line > environment > config file > default).
public enum ConfigLoader {
    public static func resolve(arguments: [String], environment: [String: String]) throws(ConfigError) -> ResolvedFlags {
        var flags = ResolvedFlags()
        for spec in FlagTable.all {
            if let d = spec.defaultValue { flags.set(spec.name, d, from: .defaultValue) }
        }
        let cli = try parseCommandLine(arguments)
        // The config file's path itself may come from the command line or the environment.
        var configPath = cli.first { $0.0 == "config" }.map { $0.1.description }
        for spec in FlagTable.all {
            for variable in spec.environment {
                guard let raw = environment[variable], !raw.isEmpty else { continue }
                let value = try convert(spec, raw: spec.kind == .list || spec.kind == .urlWithOptionalPort ? splitList(raw) : [raw], origin: "environment variable \(variable)")
                flags.set(spec.name, value, from: .environment)
                if spec.name == "config", configPath == nil { configPath = value.description }
                break
            }
        }
        if let path = configPath {
            for (name, value) in try loadConfigFile(path) { flags.set(name, value, from: .configFile) }
        }
        for (name, value) in cli { flags.set(name, value, from: .commandLine) }
        return flags
    }

    static func splitList(_ raw: String) -> [String] {
        raw.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\n" || $0 == "\t" }).map(String.init)
    }

    static func normalize(_ name: String) -> String { name.replacingOccurrences(of: "_", with: "-").lowercased() }

    /// `--flag value`, `--flag=value`, bare booleans, lists up to the next `--flag`.
    static func parseCommandLine(_ args: [String]) throws(ConfigError) -> [(String, FlagValue)] {
        var out: [(String, FlagValue)] = []
        var repeated: [String: [String]] = [:]
        var i = 0
        while i < args.count {
            let arg = args[i]
            guard arg.hasPrefix("--"), arg.count > 2 else {
                throw ConfigError("unexpected argument '\(arg)': flags start with --; see smg --help")
            }
            var name = String(arg.dropFirst(2))
            var inline: String?
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            name = FlagTable.canonical(normalize(name))
            guard let spec = FlagTable.spec(name) else {
                throw ConfigError("unknown flag --\(name); see smg --help")
            }
            i += 1
            var raw: [String] = []
            if let inline {
                raw = spec.kind == .list ? splitList(inline) : [inline]
            } else {
                switch spec.kind {
                case .bool:
                    if i < args.count, ["true", "false"].contains(args[i].lowercased()) { raw = [args[i]]; i += 1 } else { raw = ["true"] }
                case .list, .urlWithOptionalPort:
                    while i < args.count, !args[i].hasPrefix("--") { raw.append(args[i]); i += 1 }
                default:
                    guard i < args.count else { throw ConfigError("flag --\(name) needs a value") }
                    raw = [args[i]]
                    i += 1
                }
            }
            if spec.kind == .urlWithOptionalPort {
                guard (1...2).contains(raw.count) else { throw ConfigError("flag --\(name) takes URL [BOOTSTRAP_PORT|none], got \(raw.count) values") }
                repeated[name, default: []].append(raw.joined(separator: " "))
                out.append((name, .list(repeated[name]!)))
                continue
            }
            if spec.kind == .list {
                // A list flag given again adds to it (`--tenant-api-key a:k1 --tenant-api-key b:k2`).
                repeated[name, default: []] += raw
                out.append((name, .list(repeated[name]!)))
                continue
            }
            out.append((name, try convert(spec, raw: raw, origin: "flag --\(name)")))
        }
        return out
    }

    static func convert(_ spec: FlagSpec, raw: [String], origin: String) throws(ConfigError) -> FlagValue {
        func one() throws(ConfigError) -> String {
            guard raw.count == 1 else { throw ConfigError("\(origin) takes one value, got \(raw.count)") }
            return raw[0]
        }
        switch spec.kind {
        case .string: return .string(try one())
        case .int:
            let s = try one()
            guard let v = Int(s.trimmingCharacters(in: .whitespaces)) else { throw ConfigError("\(origin): '\(s)' is not an integer") }
            return .int(v)
        case .double:
            let s = try one()
            guard let v = Double(s.trimmingCharacters(in: .whitespaces)), v.isFinite else { throw ConfigError("\(origin): '\(s)' is not a number") }
            return .double(v)
        case .bool:
            switch try one().lowercased() {
            case "true", "1", "yes", "on": return .bool(true)
            case "false", "0", "no", "off": return .bool(false)
            case let s: throw ConfigError("\(origin): '\(s)' is not true or false")
            }
        case .list, .urlWithOptionalPort: return .list(raw)
        }
    }

    /// Loads a YAML mapping whose keys are flag names (dash or underscore spelling).
    static func loadConfigFile(_ path: String) throws(ConfigError) -> [(String, FlagValue)] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigError("--config \(path): cannot read the file (\(error.localizedDescription))")
        }
        return try parseConfig(text, path: path)
    }

    /// The flags of a config file's text (`path` only names it in errors). The YAML is read as
    /// a node tree, not through Yams' `load` (its untyped constructor traps on a mapping whose
    /// key is not a string, which fuzzing found): keys must be scalars, values scalars or lists
    /// of scalars.
    static func parseConfig(_ text: String, path: String) throws(ConfigError) -> [(String, FlagValue)] {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw ConfigError("--config \(path): not valid YAML: \(error)")
        }
        guard let root else { return [] }
        guard let mapping = root.mapping else { throw ConfigError("--config \(path): the top level must be a mapping of flag names to values") }
        var entries: [(String, Node)] = []
        for (keyNode, value) in mapping {
            guard let key = keyNode.scalar?.string else { throw ConfigError("--config \(path): every key must be a flag name") }
            entries.append((key, value))
        }
        var out: [(String, FlagValue)] = []
        for (key, value) in entries.sorted(by: { $0.0 < $1.0 }) {
            let name = FlagTable.canonical(normalize(key))
            guard let spec = FlagTable.spec(name), name != "config" else {
                throw ConfigError("--config \(path): unknown key '\(key)'")
            }
            let raw: [String]
            switch value {
            case .scalar where value.null != nil: continue
            case .scalar: raw = spec.kind == .list ? splitList(scalarText(value, spec)) : [scalarText(value, spec)]
            case .sequence(let items):
                raw = try items.map { item throws(ConfigError) -> String in
                    guard case .scalar = item else { throw ConfigError("--config \(path): key '\(key)' takes a value or a list of values") }
                    return scalarText(item, spec)
                }
            default: throw ConfigError("--config \(path): key '\(key)' takes a value or a list of values")
            }
            if spec.kind != .list && spec.kind != .urlWithOptionalPort && raw.count != 1 {
                throw ConfigError("--config \(path): key '\(key)' takes one value")
            }
            out.append((name, try convert(spec, raw: raw, origin: "--config \(path): key '\(key)'")))
        }
        return out
    }

    /// A scalar as the flag reads it: YAML's spellings of booleans (`yes`, `off`) as their
    /// values, anything else as written (the flag's own parsing checks numbers). Yams' number
    /// constructors are not used: its sexagesimal integers (`1:30`) trap on overflow (found by
    /// fuzz/run.sh config).
    private static func scalarText(_ node: Node, _ spec: FlagSpec) -> String {
        let text = node.scalar?.string ?? ""
        return spec.kind == .bool ? node.bool.map { String($0) } ?? text : text
    }
}
