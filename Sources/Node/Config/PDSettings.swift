import Policies

/// `--pd-disaggregation`: prefill and decode workers, each with its own policy, inherited as
/// the reference gateway inherits it: `--prefill-policy` / `--decode-policy`, else `--policy`.
public struct PDSettings: Sendable, Equatable {
    public struct Prefill: Sendable, Equatable {
        /// Canonical URL.
        public var url: String
        /// Where the decode worker reaches the prefill's KV bootstrap server; nil: none given
        /// (sent as `"bootstrap_port": null`).
        public var bootstrapPort: Int?
    }

    public var prefills: [Prefill]
    /// Canonical URLs.
    public var decodes: [String]
    public var prefillPolicy: PolicyName
    public var decodePolicy: PolicyName

    /// Nil without `--pd-disaggregation`; then any PD-only flag is refused, so a mistyped command
    /// line does not start a regular router.
    static func parse(_ f: ResolvedFlags, policy: PolicyName) throws(ConfigError) -> PDSettings? {
        func policyFlag(_ name: String) throws(ConfigError) -> PolicyName? {
            guard let v = f.string(name) else { return nil }
            guard let p = PolicyName(rawValue: v) else {
                throw ConfigError("--\(name) \(v): unknown policy; expected one of \(PolicyName.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return p
        }
        let prefillPolicy = try policyFlag("prefill-policy"), decodePolicy = try policyFlag("decode-policy")
        guard f.bool("pd-disaggregation") else {
            for flag in ["prefill", "decode", "prefill-policy", "decode-policy"] where f.isExplicit(flag) {
                throw ConfigError("--\(flag) needs --pd-disaggregation")
            }
            return nil
        }
        if !f.list("worker-urls").isEmpty {
            throw ConfigError("--worker-urls cannot be used with --pd-disaggregation: give prefill workers with --prefill URL [BOOTSTRAP_PORT|none] and decode workers with --decode URL")
        }
        var prefills: [Prefill] = []
        for entry in f.list("prefill") {
            let parts = entry.split(separator: " ").map(String.init)
            let url = try WorkerURL.validate(parts[0], flag: "--prefill")
            var port: Int?
            if parts.count == 2, parts[1].lowercased() != "none" {
                guard let p = Int(parts[1]), (1...65535).contains(p) else {
                    throw ConfigError("--prefill \(entry): the bootstrap port must be 1-65535 or none")
                }
                port = p
            }
            prefills.append(Prefill(url: url, bootstrapPort: port))
        }
        var decodes: [String] = []
        for entry in f.list("decode") {
            let parts = entry.split(separator: " ")
            guard parts.count == 1 else { throw ConfigError("--decode \(entry): one URL per --decode (decode workers have no bootstrap port)") }
            decodes.append(try WorkerURL.validate(String(parts[0]), flag: "--decode"))
        }
        let inherited = resolvePDPolicies(policy: policy, prefill: prefillPolicy, decode: decodePolicy)
        return PDSettings(prefills: prefills, decodes: decodes, prefillPolicy: inherited.prefill, decodePolicy: inherited.decode)
    }
}
