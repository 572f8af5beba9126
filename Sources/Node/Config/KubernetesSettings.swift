import Foundation

/// `--service-discovery` / `--discovery-provider kubernetes`: which pods become workers, which
/// are the other routers, and how a pod's worker is named, checked at start-up.
public struct KubernetesSettings: Sendable, Equatable {
    /// `--selector`: regular workers (not in PD mode).
    var workers: KubeSelector?
    /// `--prefill-selector` / `--decode-selector` (PD mode).
    var prefill: KubeSelector?
    var decode: KubeSelector?
    /// `--router-selector`: the routers' pods, as mesh peers.
    var routers: KubeSelector?
    /// nil: every namespace.
    var namespace: String?
    var port: Int
    var bootstrapAnnotation: String
    /// `--kv-connector-annotation`, `--kv-engine-id-annotation`: the worker label each fills
    /// (`kv_connector`, `kv_engine_id`, the names a discovery manifest uses) → the pod annotation.
    var kvAnnotations: [String: String]
    var modelIDFrom: ModelIDSource?

    /// `--model-id-from`.
    enum ModelIDSource: Sendable, Equatable {
        case namespace
        case label(String)
        case annotation(String)

        func modelID(of pod: KubePod) -> String? {
            switch self {
            case .namespace: pod.namespace
            case .label(let key): pod.labels[key]
            case .annotation(let key): pod.annotations[key]
            }
        }
    }

    /// nil when discovery is not asked for; then a discovery-only flag is refused, so a mistyped
    /// command line does not start a router that silently discovers nothing.
    static func parse(_ f: ResolvedFlags, pd: Bool, mesh: Bool) throws(ConfigError) -> KubernetesSettings? {
        let provider = f.string("discovery-provider")
        if f.bool("service-discovery"), provider != nil {
            throw ConfigError("give --service-discovery or --discovery-provider, not both (--service-discovery is the older spelling of --discovery-provider kubernetes)")
        }
        let only = ["selector", "prefill-selector", "decode-selector", "router-selector", "service-discovery-namespace",
                    "service-discovery-port", "bootstrap-port-annotation", "model-id-from", "kv-connector-annotation", "kv-engine-id-annotation"]
        guard f.bool("service-discovery") || provider == "kubernetes" else {
            if let flag = only.first(where: { f.isExplicit($0) }) { throw ConfigError("--\(flag) needs --service-discovery (Kubernetes discovery)") }
            return nil
        }
        func selector(_ flag: String) throws(ConfigError) -> KubeSelector? {
            let items = f.list(flag)
            return items.isEmpty ? nil : try KubeSelector(items, flag: "--\(flag)")
        }
        var s = KubernetesSettings(workers: try selector("selector"), prefill: try selector("prefill-selector"), decode: try selector("decode-selector"),
                                   routers: try selector("router-selector"), namespace: nil, port: f.intWithDefault("service-discovery-port"),
                                   bootstrapAnnotation: f.stringWithDefault("bootstrap-port-annotation"),
                                   kvAnnotations: ["kv_connector": f.stringWithDefault("kv-connector-annotation"),
                                                   "kv_engine_id": f.stringWithDefault("kv-engine-id-annotation")],
                                   modelIDFrom: nil)
        if pd {
            if s.workers != nil { throw ConfigError("--selector is for regular workers; in PD mode give --prefill-selector and --decode-selector") }
            if s.prefill == nil, s.decode == nil, s.routers == nil {
                throw ConfigError("--service-discovery with --pd-disaggregation needs --prefill-selector and --decode-selector")
            }
        } else {
            for flag in ["prefill-selector", "decode-selector"] where f.isExplicit(flag) { throw ConfigError("--\(flag) needs --pd-disaggregation") }
            if s.workers == nil, s.routers == nil { throw ConfigError("--service-discovery needs --selector key=value … (the labels of the worker pods)") }
        }
        if s.routers != nil, !mesh { throw ConfigError("--router-selector finds mesh peers: it needs --enable-mesh") }
        if let ns = f.string("service-discovery-namespace") {
            let bytes = Array(ns.utf8)
            guard KubeSelector.validDNSSubdomain(ns), bytes.count <= 63, !ns.contains(".") else {
                throw ConfigError("--service-discovery-namespace \(ns.prefix(80)): not a namespace name (lower-case letters, digits and '-', at most 63)")
            }
            s.namespace = ns
        }
        guard (1...65535).contains(s.port) else { throw ConfigError("--service-discovery-port \(s.port): must be 1 to 65535") }
        for (flag, key) in [("bootstrap-port-annotation", s.bootstrapAnnotation), ("kv-connector-annotation", s.kvAnnotations["kv_connector"]!),
                            ("kv-engine-id-annotation", s.kvAnnotations["kv_engine_id"]!)] {
            guard KubeSelector.validKey(key) else { throw ConfigError("--\(flag) \(key.prefix(80)): not an annotation key ([prefix/]name)") }
        }
        if let raw = f.string("model-id-from") {
            if raw == "namespace" {
                s.modelIDFrom = .namespace
            } else if raw.hasPrefix("label:"), KubeSelector.validKey(String(raw.dropFirst(6))) {
                s.modelIDFrom = .label(String(raw.dropFirst(6)))
            } else if raw.hasPrefix("annotation:"), KubeSelector.validKey(String(raw.dropFirst(11))) {
                s.modelIDFrom = .annotation(String(raw.dropFirst(11)))
            } else {
                throw ConfigError("--model-id-from \(raw.prefix(80)): expected namespace, label:<key> or annotation:<key>")
            }
        }
        return s
    }
}
