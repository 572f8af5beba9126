import Primitives

/// A worker a discovery provider wants registered (a manifest entry, a serving pod), and the one
/// step both providers take to bring the registry in line with it at one URL.
///
/// Discovered workers carry labels saying where they came from, in the reference gateway's
/// names: `smg.ai/discovery-provider` (`file`, `kubernetes`), `smg.ai/discovery-id` (the
/// manifest entry's id, the pod's namespace/name) and `smg.ai/discovery-spec-hash` (a digest of
/// the registration: an entry or pod that changes how its worker is registered, such as a new
/// model id or bootstrap port, is registered anew). A provider only ever removes workers that
/// carry its own label: workers from `--worker-urls` or `POST /workers` are left alone.
struct DiscoveredWorker: Equatable, Sendable {
    var url: WorkerURL
    var role: WorkerRole
    var bootstrapPort: Int?
    var modelID: String?
    var labels: [String: String]

    static let providerLabel = "smg.ai/discovery-provider"
    static let idLabel = "smg.ai/discovery-id"
    static let specLabel = "smg.ai/discovery-spec-hash"

    /// `extra` are labels of the provider's own (the KV fields of a manifest entry).
    init(provider: String, id: String, url: WorkerURL, role: WorkerRole, bootstrapPort: Int?, modelID: String?, extra: [String: String] = [:]) {
        self.url = url
        self.role = role
        self.bootstrapPort = bootstrapPort
        self.modelID = modelID
        let fields = [id, url.canonical, role.rawValue, bootstrapPort.map(String.init) ?? "", modelID ?? ""]
            + extra.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let hex = String(FNV1a.hash(fields.joined(separator: "\u{1F}")), radix: 16)
        labels = extra.merging([Self.providerLabel: provider, Self.idLabel: id, Self.specLabel: String(repeating: "0", count: 16 - hex.count) + hex]) { $1 }
    }

    var spec: String { labels[Self.specLabel] ?? "" }

    /// Makes the registry hold `wanted` at `canonical` (nil: no worker of `provider` there): a
    /// worker of the provider that is not wanted, or wanted otherwise, is removed (it leaves
    /// routing at once, its requests in flight finish) and the wanted one added. `existing`
    /// saves the registry's linear look-up when the caller has a map of it.
    static func settle(_ canonical: String, wanted: DiscoveredWorker?, provider: String, state: RouterState, source: String) {
        let registry = state.registry
        if let existing = registry.worker(url: canonical), existing.labels[providerLabel] == provider,
           wanted == nil || wanted?.spec != existing.labels[specLabel] || wanted?.role != existing.role,
           let removed = registry.remove(id: existing.id) {
            WorkerRoutes.removed(removed, state: state)
        }
        guard let wanted, registry.worker(url: canonical) == nil else { return }
        guard let w = try? registry.add(url: wanted.url, modelID: wanted.modelID, role: wanted.role, bootstrapPort: wanted.bootstrapPort,
                                        labels: wanted.labels) else { return }  // added meanwhile by another path
        WorkerRoutes.registered(w, state: state, source: source)
    }
}
