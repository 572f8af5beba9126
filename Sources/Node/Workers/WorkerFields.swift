/// What a caller, or a peer router, may set on a worker. The `api_key` becomes an
/// `Authorization` header line to that worker, and the model id a metric label and a policy:
/// no control characters (a CR LF would split the header line and could smuggle a second
/// request onto a pooled connection), and bounded sizes.
enum WorkerFields {
    static let maxModelID = 512
    static let maxAPIKey = 4096
    /// With the other limits, a worker's replicated settings stay under the mesh's 16 KiB value.
    static let maxLabels = 16
    static let maxLabelLength = 256

    /// What is wrong with these values, or nil when they are acceptable.
    static func problem(model: String?, labels: [String: String]?, apiKey: String?) -> String? {
        if let model {
            guard model.utf8.count <= maxModelID else { return "model_id is longer than \(maxModelID) bytes" }
            guard HeaderValue.isSafe(model) else { return "model_id holds a control character" }
        }
        if let apiKey {
            guard apiKey.utf8.count <= maxAPIKey else { return "api_key is longer than \(maxAPIKey) bytes" }
            guard HeaderValue.isSafe(apiKey) else { return "api_key holds a control character (CR, LF, NUL, …)" }
        }
        if let labels {
            guard labels.count <= maxLabels else { return "more than \(maxLabels) labels" }
            for (k, v) in labels {
                guard k.utf8.count <= maxLabelLength, v.utf8.count <= maxLabelLength else { return "label '\(k.prefix(40))' is longer than \(maxLabelLength) bytes" }
                guard HeaderValue.isSafe(k), HeaderValue.isSafe(v) else { return "label '\(k.prefix(40))' holds a control character" }
            }
        }
        return nil
    }

    /// `worker_type` (regular, prefill or decode) and a prefill's `bootstrap_port` (or null).
    static func role(_ request: JSONValue) throws(APIError) -> (WorkerRole, Int?) {
        var role = WorkerRole.regular
        if let raw = request["worker_type"], raw != .null {
            guard let name = raw.string, let r = WorkerRole(rawValue: name) else {
                throw APIError(.invalidWorkerType, "worker_type must be regular, prefill or decode")
            }
            role = r
        }
        var port: Int?
        if let raw = request["bootstrap_port"], raw != .null {
            guard let p = raw.int, (1...65535).contains(p) else { throw APIError(.invalidBootstrapPort, "bootstrap_port must be 1-65535 or null") }
            guard role == .prefill else { throw APIError(.invalidBootstrapPort, "only a prefill worker has a bootstrap_port") }
            port = p
        }
        return (role, port)
    }

    /// A worker's settings as another router is told them (the mesh's "workers" store, an
    /// in-place upgrade's handover): model, labels, API key, type and bootstrap port.
    static func settings(of w: Worker) -> JSONValue {
        var settings: [String: JSONValue] = ["labels": JSONValue(w.labels)]
        if let m = w.modelID { settings["model_id"] = .string(m) }
        if let k = w.apiKey { settings["api_key"] = .string(k) }
        if w.role != .regular { settings["worker_type"] = .string(w.role.rawValue) }
        if let p = w.bootstrapPort { settings["bootstrap_port"] = .int(p) }
        return .object(settings)
    }

    /// Settings another router sent (`settings(of:)`), checked as the worker APIs check them.
    struct Received {
        let model: String?
        let labels: [String: String]
        let apiKey: String?
        let role: WorkerRole
        let bootstrapPort: Int?

        /// The settings, or the reason they are refused.
        static func from(_ settings: JSONValue) -> Result<Received, ReceivedRefusal> {
            let model = settings["model_id"]?.string
            let labels = settings["labels"]?.stringMap ?? [:]
            let apiKey = settings["api_key"]?.string
            if let problem = WorkerFields.problem(model: model, labels: labels, apiKey: apiKey) { return .failure(ReceivedRefusal(reason: problem)) }
            guard let (role, port) = try? WorkerFields.role(settings) else { return .failure(ReceivedRefusal(reason: "worker_type or bootstrap_port is invalid")) }
            return .success(Received(model: model, labels: labels, apiKey: apiKey, role: role, bootstrapPort: port))
        }
    }

    struct ReceivedRefusal: Error { let reason: String }
}
