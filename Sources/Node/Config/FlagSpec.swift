import Foundation

/// One command-line flag of the configuration reference: its spelling, value kind, default,
/// environment variables, help text and whether this build implements it.
///
/// One table of these drives the command-line parser, the environment and config-file
/// loaders, `--help`, and the start-up check that refuses flags whose feature is not built.
public struct FlagSpec: Sendable {
    public enum Kind: Sendable, Equatable {
        case string, int, double, bool
        /// Space-separated values: `--worker-urls a b c`.
        case list
        /// Repeatable `--prefill URL [BOOTSTRAP_PORT|none]`: each use is one entry.
        case urlWithOptionalPort
    }

    /// Whether the feature behind a flag exists in this build.
    public enum Status: Sendable, Equatable {
        case works
        /// Parsed, but giving it explicitly stops start-up with a message naming the missing feature.
        case notBuilt(String)
    }

    public let name: String
    public let kind: Kind
    public let defaultValue: FlagValue?
    /// The reference's own variable first (e.g. `REDIS_URL`), then `SMG_<NAME>`.
    public let environment: [String]
    public let help: String
    public let group: String
    public let status: Status

    init(_ name: String, _ kind: Kind, _ defaultValue: FlagValue?, env: String? = nil,
         group: String, status: Status = .works, _ help: String) {
        self.name = name
        self.kind = kind
        self.defaultValue = defaultValue
        let generic = "SMG_" + name.uppercased().replacingOccurrences(of: "-", with: "_")
        self.environment = env.map { [$0, generic] } ?? [generic]
        self.help = help
        self.group = group
        self.status = status
    }
}

/// A parsed flag value.
public enum FlagValue: Sendable, Equatable, CustomStringConvertible {
    case string(String), int(Int), double(Double), bool(Bool), list([String])

    public var description: String {
        switch self {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        case .bool(let b): return String(b)
        case .list(let l): return l.joined(separator: " ")
        }
    }
}

/// Where a flag's effective value came from; higher wins (command line > env > file > default).
public enum FlagSource: Int, Sendable, Comparable, CustomStringConvertible {
    case defaultValue = 0, configFile, environment, commandLine
    public static func < (a: FlagSource, b: FlagSource) -> Bool { a.rawValue < b.rawValue }
    public var description: String {
        switch self {
        case .defaultValue: return "default"
        case .configFile: return "config file"
        case .environment: return "environment"
        case .commandLine: return "command line"
        }
    }
}
