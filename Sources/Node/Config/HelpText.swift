import Foundation

/// `smg --help`: the flags grouped as in the configuration reference.
public enum HelpText {
    public static func render() -> String {
        var out = """
            smg: the SGLang Model Gateway router, in Swift

            USAGE
              smg [FLAGS]            start a router
              smg launch [FLAGS]     the same
              smg demo [FLAGS]       start a router over three simulated workers (try it with curl)
              smg mesh-keygen        print a new cluster key for --mesh-key-file
              smg --help | --version

            Every flag can also come from the environment (SMG_<FLAG> with dashes as underscores,
            or the reference's own variable where it has one) or from --config FILE.yaml.
            Precedence: command line > environment > config file > default.
            Flags marked [not built] are parsed, but giving one stops start-up with a message.

            """
        var group = ""
        for spec in FlagTable.all {
            if spec.group != group {
                group = spec.group
                out += "\n\(group.uppercased())\n"
            }
            var line = "  --\(spec.name)"
            switch spec.kind {
            case .bool: break
            case .list: line += " V..."
            case .urlWithOptionalPort: line += " URL [PORT]"
            default: line += " V"
            }
            if line.count < 40 { line += String(repeating: " ", count: 40 - line.count) } else { line += "\n" + String(repeating: " ", count: 40) }
            line += spec.help
            if let d = spec.defaultValue, d != .list([]) { line += " (default: \(d))" }
            if spec.environment.count > 1 { line += " [env \(spec.environment[0])]" }
            if case .notBuilt = spec.status { line += " [not built]" }
            out += line + "\n"
        }
        return out
    }
}

extension HelpText {
    /// The flag table of docs/configuration.md (`smg config-reference` prints it; a test keeps
    /// the committed document equal to it).
    public static func markdownTable() -> String {
        var out = ""
        var group = ""
        for spec in FlagTable.all {
            if spec.group != group {
                group = spec.group
                out += "\n### \(group)\n\n| flag | default | environment | status | what |\n|---|---|---|---|---|\n"
            }
            let d = spec.defaultValue.map { $0 == .list([]) ? "empty" : "`\($0)`" } ?? "none"
            let env = spec.environment.map { "`\($0)`" }.joined(separator: ", ")
            let status: String
            switch spec.status {
            case .works: status = "works"
            case .notBuilt(let owner): status = "not yet: \(owner)"
            }
            out += "| `--\(spec.name)` | \(d) | \(env) | \(status) | \(spec.help.replacingOccurrences(of: "|", with: "\\|")) |\n"
        }
        return out
    }
}
