/// `--discovery-file`: the workers a file lists, in the reference gateway 1.13's format:
///
///     {"version": 1, "workers": [{"url": "http://10.0.0.5:30000", "model_id": "llama",
///       "id": "gpu-5", "worker_type": "prefill", "bootstrap_port": 8998,
///       "kv_connector": "…", "kv_role": "…", "kv_engine_id": "…"}]}
///
/// Only `url` is required. Read strictly, as the reference does: an unknown field, another
/// version, a second entry for one URL or id, a bad URL or a value a worker may not hold is
/// an error that names it, and the whole manifest is refused (the router keeps the last good
/// one rather than dropping workers over a typo). Bounded: 4 MiB, 10,000 workers.
struct DiscoveryManifest: Equatable, Sendable {
    struct Entry: Equatable, Sendable {
        /// The entry's identity in the manifest (`id`, else the URL).
        var id: String
        var url: WorkerURL
        var role: WorkerRole
        var bootstrapPort: Int?
        var modelID: String?
        /// `kv_connector`, `kv_role`, `kv_engine_id`: kept as labels of the same names.
        var kv: [String: String]

        /// How the entry's worker is registered: the KV fields kept as labels, and where it came from.
        var worker: DiscoveredWorker {
            DiscoveredWorker(provider: "file", id: id, url: url, role: role, bootstrapPort: bootstrapPort, modelID: modelID, extra: kv)
        }
    }

    var workers: [Entry]

    static let version = 1
    static let maxBytes = 4 << 20
    static let maxWorkers = 10_000
    static let entryFields: Set<String> = ["id", "url", "worker_type", "bootstrap_port", "model_id", "kv_connector", "kv_role", "kv_engine_id"]

    struct Invalid: Error, Equatable, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    static func parse(_ bytes: some Collection<UInt8>) throws(Invalid) -> DiscoveryManifest {
        guard bytes.count <= maxBytes else { throw Invalid("larger than \(maxBytes) bytes") }
        guard let root = JSONValue.parse(Array(bytes)), let top = root.object else { throw Invalid("not a JSON object") }
        if let unknown = top.keys.sorted().first(where: { $0 != "version" && $0 != "workers" }) {
            throw Invalid("unknown field '\(unknown.prefix(64))', expected version and workers")
        }
        guard let version = top["version"] else { throw Invalid("missing field 'version'") }
        guard version.int == Self.version else { throw Invalid("unsupported version \(version.render().prefix(32)); this smg reads version \(Self.version)") }
        guard let list = top["workers"] else { throw Invalid("missing field 'workers'") }
        guard let items = list.array else { throw Invalid("'workers' is not an array") }
        guard items.count <= maxWorkers else { throw Invalid("more than \(maxWorkers) workers") }
        var entries: [Entry] = []
        var urls: Set<String> = []
        var ids: Set<String> = []
        for (i, item) in items.enumerated() {
            let entry = try Self.entry(item, at: i)
            guard urls.insert(entry.url.canonical).inserted else { throw Invalid("workers[\(i)]: \(entry.url.canonical) is listed twice") }
            guard ids.insert(entry.id).inserted else { throw Invalid("workers[\(i)]: id '\(entry.id.prefix(64))' is listed twice") }
            entries.append(entry)
        }
        return DiscoveryManifest(workers: entries)
    }

    private static func entry(_ item: JSONValue, at i: Int) throws(Invalid) -> Entry {
        guard let fields = item.object else { throw Invalid("workers[\(i)] is not an object") }
        if let unknown = fields.keys.sorted().first(where: { !entryFields.contains($0) }) {
            throw Invalid("workers[\(i)]: unknown field '\(unknown.prefix(64))', expected one of \(entryFields.sorted().joined(separator: ", "))")
        }
        func text(_ name: String) throws(Invalid) -> String? {
            guard let v = fields[name], v != .null else { return nil }
            guard let s = v.string, !s.isEmpty else { throw Invalid("workers[\(i)]: '\(name)' must be a non-empty string") }
            return s
        }
        guard let raw = try text("url") else { throw Invalid("workers[\(i)]: missing field 'url'") }
        let url: WorkerURL
        do { url = try WorkerURL(parsing: raw) } catch { throw Invalid("workers[\(i)]: \(error.message)") }
        let role: WorkerRole
        let port: Int?
        do { (role, port) = try WorkerFields.role(item) } catch { throw Invalid("workers[\(i)]: \(error.message)") }
        let model = try text("model_id")
        var kv: [String: String] = [:]
        for name in ["kv_connector", "kv_role", "kv_engine_id"] { kv[name] = try text(name) }
        let id = try text("id") ?? url.canonical
        let entry = Entry(id: id, url: url, role: role, bootstrapPort: port, modelID: model, kv: kv)
        if let problem = WorkerFields.problem(model: model, labels: entry.worker.labels, apiKey: nil) { throw Invalid("workers[\(i)]: \(problem)") }
        return entry
    }
}
