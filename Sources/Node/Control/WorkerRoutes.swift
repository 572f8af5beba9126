import NIOCore
import Policies
import NIOHTTP1

/// Worker management: `GET/POST /workers`, `GET/PATCH/PUT/DELETE /workers/{id}` and the legacy
/// `/add_worker`, `/remove_worker`, `/list_workers` forms. A change made here is published to the
/// other routers of the mesh.
enum WorkerRoutes {
    static func answer(_ route: Route, target: RequestTarget, body: ByteBuffer, state: RouterState) throws(APIError) -> ControlResponse {
        let registry = state.registry
        switch route {
        case .listWorkers:
            let all = registry.all
            return ControlResponse(json: [
                "workers": .array(all.map(describe)), "total": .int(all.count),
                "stats": ["healthy": .int(all.filter(\.isAvailable).count), "total_load": .int(all.reduce(0) { $0 + $1.fleetInFlight }),
                          "by_type": .object(Dictionary(uniqueKeysWithValues: WorkerRole.allCases.map { role in
                              (role.rawValue, JSONValue.int(all.filter { $0.role == role }.count)) }))],
            ])
        case .legacyListWorkers:
            return ControlResponse(json: ["urls": JSONValue(registry.all.map(\.url.canonical))])
        case .getWorker(let id):
            return ControlResponse(json: describe(try worker(id, in: registry)))
        case .addWorker:
            guard let request = JSONValue.parse(body.readableBytesView), request.object != nil else {
                throw APIError(.invalidJSON, #"POST /workers expects a JSON object like {"url": "http://host:port"}"#)
            }
            guard let raw = request["url"]?.string else { throw APIError(.missingURL, "POST /workers: 'url' is required") }
            if let labels = request["labels"], labels.stringMap == nil { throw invalidLabels }
            try check(model: request["model_id"]?.string ?? request["model"]?.string, labels: request["labels"]?.stringMap, apiKey: request["api_key"]?.string)
            try checkPolicyLabel(request["labels"]?.stringMap, state: state)
            let (role, bootstrapPort) = try WorkerFields.role(request)
            return try add(raw, model: request["model_id"]?.string ?? request["model"]?.string, role: role, bootstrapPort: bootstrapPort,
                           labels: request["labels"]?.stringMap ?? [:], apiKey: request["api_key"]?.string, state: state, legacy: false)
        case .updateWorker(let id):
            let w = try worker(id, in: registry)
            guard let request = JSONValue.parse(body.readableBytesView), let fields = request.object else {
                throw APIError(.invalidJSON, "PATCH/PUT /workers/{id} expects a JSON object of fields to change")
            }
            if let url = fields["url"]?.string, (try? WorkerURL(parsing: url))?.canonical != w.url.canonical {
                throw APIError(.urlImmutable, "a worker's url cannot change; add a new worker and remove this one")
            }
            let known: Set<String> = ["url", "model_id", "labels", "api_key"]
            if let unknown = fields.keys.sorted().first(where: { !known.contains($0) }) {
                throw APIError(.unknownField, "unknown field '\(unknown)'; updatable: model_id, labels, api_key")
            }
            if let labels = fields["labels"], labels.stringMap == nil { throw invalidLabels }
            try check(model: fields["model_id"]?.string, labels: fields["labels"]?.stringMap, apiKey: fields["api_key"]?.string)
            try checkPolicyLabel(fields["labels"]?.stringMap, state: state)
            if let m = fields["model_id"]?.string, !m.isEmpty { w.setModelID(m) }
            // `"api_key": null` removes the worker's key; leaving the field out keeps it.
            let apiKey: String?? = fields.keys.contains("api_key") ? .some(fields["api_key"]?.string) : .none
            w.update(labels: fields["labels"]?.stringMap, apiKey: apiKey)
            MeshBridge.published(w, state: state)
            state.log(.workers).info("worker updated", metadata: ["worker": "\(w.url.canonical)", "fields": "\(fields.keys.sorted().joined(separator: ","))"])
            return ControlResponse(json: describe(w))
        case .legacyAddWorker:
            guard let raw = target.parameter("url"), !raw.isEmpty else { throw APIError(.missingURL, "add_worker needs ?url=http://host:port") }
            return try add(raw, model: nil, role: .regular, bootstrapPort: nil, labels: [:], apiKey: nil, state: state, legacy: true)
        case .deleteWorker(let id):
            guard let w = registry.remove(id: id) else { throw workerNotFound(id) }
            removed(w, state: state)
            return ControlResponse(status: .accepted, json: [
                "id": .string(w.id), "url": .string(w.url.canonical), "status": "removed",
                "message": "worker removed from routing; its in-flight requests finish",
            ])
        case .legacyRemoveWorker:
            guard let raw = target.parameter("url"), let url = try? WorkerURL(parsing: raw) else {
                throw APIError(.missingURL, "remove_worker needs ?url=http://host:port")
            }
            guard let w = registry.worker(url: url.canonical), registry.remove(id: w.id) != nil else { throw workerNotFound(url.canonical) }
            removed(w, state: state)
            return ControlResponse(json: ["status": "ok", "message": .string("Successfully removed worker: \(url.canonical)"), "id": .string(w.id)])
        default:
            throw .routeNotFound(.GET, "/workers")
        }
    }

    /// A worker as the worker APIs show it.
    static func describe(_ w: Worker) -> JSONValue {
        [
            "id": .string(w.id), "url": .string(w.url.canonical), "model_id": JSONValue(w.modelID), "worker_type": .string(w.workerType),
            "is_healthy": .bool(w.isHealthy), "is_draining": .bool(w.isDraining), "load": .int(w.fleetInFlight), "router_load": .int(w.inFlight), "labels": JSONValue(w.labels),
            "reported_load": JSONValue(w.reportedLoad), "health": .string(w.healthStatus.rawValue), "refused": JSONValue(w.refusal),
            "circuit_breaker": .string(w.breakerState.rawValue), "has_api_key": .bool(w.apiKey != nil),
            "bootstrap_port": JSONValue(w.bootstrapPort), "dp_size": .int(w.dpSize),
            "engine_load": engineLoad(w), "overloaded": .bool(w.isOverloaded(now: MonotonicClock.nowMs())),
            "protocol": .string(w.speaksHTTP2 ? "http2" : "http1.1"),
        ]
    }

    /// The engine's last `/v1/loads` report, in its own field names, with its age: null until one came.
    private static func engineLoad(_ w: Worker) -> JSONValue {
        guard let report = w.engineLoad else { return .null }
        let loads: [JSONValue] = report.load.ranks.map { r in
            ["dp_rank": .int(r.rank), "num_running_reqs": .int(r.running), "num_waiting_reqs": .int(r.waiting),
             "token_usage": r.tokenUsage.map { .double($0) } ?? .null, "gen_throughput": r.throughput.map { .double($0) } ?? .null]
        }
        let now = MonotonicClock.nowMs()
        return ["loads": .array(loads), "age_ms": .int(Int(now > report.atMs ? now - report.atMs : 0)),
                "aggregate": ["total_running_reqs": .int(report.load.running), "total_waiting_reqs": .int(report.load.waiting),
                              "avg_token_usage": report.load.tokenUsage.map { .double($0) } ?? .null]]
    }

    private static func add(_ raw: String, model: String?, role: WorkerRole, bootstrapPort: Int?, labels: [String: String], apiKey: String?,
                            state: RouterState, legacy: Bool) throws(APIError) -> ControlResponse {
        let url: WorkerURL
        do { url = try WorkerURL(parsing: raw) } catch { throw APIError(.invalidURL, error.message) }
        let w: Worker
        do {
            w = try state.registry.add(url: url, modelID: model, role: role, bootstrapPort: bootstrapPort, labels: labels, apiKey: apiKey)
        } catch {
            guard case .duplicate(let existing) = error else { throw APIError(.invalidWorker, "\(error)") }
            throw APIError(.workerExists, "worker \(url.canonical) is already registered as \(existing)")
        }
        registered(w, state: state)
        if legacy {
            return ControlResponse(json: ["status": "ok", "message": .string("Successfully added worker: \(url.canonical)"), "id": .string(w.id)])
        }
        var response = ControlResponse(status: .accepted, json: ["id": .string(w.id), "url": .string(url.canonical), "status": "accepted", "message": "worker added"])
        response.headers.add(name: "location", value: "/workers/\(w.id)")
        return response
    }

    /// A worker added here (by the API or discovery): logged, its model asked for when it has
    /// none, the other routers told.
    static func registered(_ w: Worker, state: RouterState, source: String = "api") {
        state.log(.workers).info("worker added", metadata: ["worker": "\(w.url.canonical)", "id": "\(w.id)", "type": "\(w.role.rawValue)", "source": "\(source)"])
        state.discovery.discover(w)
        MeshBridge.published(w, state: state)
    }

    /// A worker removed here: logged, its pooled connections closed, the other routers told.
    static func removed(_ w: Worker, state: RouterState) {
        state.log(.workers).info("worker removed", metadata: ["worker": "\(w.url.canonical)", "id": "\(w.id)", "in_flight": "\(w.inFlight)"])
        state.pools.closeIdle(to: w.url)
        MeshBridge.removed(w.url, state: state)
    }

    private static func worker(_ id: String, in registry: WorkerRegistry) throws(APIError) -> Worker {
        guard let w = registry.worker(id: id) else { throw workerNotFound(id) }
        return w
    }

    private static func workerNotFound(_ id: String) -> APIError {
        APIError(.workerNotFound, "no worker \(id)")
    }

    private static func check(model: String?, labels: [String: String]?, apiKey: String?) throws(APIError) {
        if let problem = WorkerFields.problem(model: model, labels: labels, apiKey: apiKey) { throw APIError(.invalidWorkerField, problem) }
    }

    /// Under `--enable-igw` a worker's `policy` label names its model's policy: it must be one.
    private static func checkPolicyLabel(_ labels: [String: String]?, state: RouterState) throws(APIError) {
        guard state.config.igw, let name = labels?["policy"], PolicyName(rawValue: name) == nil else { return }
        throw APIError(.invalidPolicy, "labels.policy '\(name)' is not a policy; expected one of \(PolicyName.allCases.map(\.rawValue).joined(separator: ", "))")
    }

    private static let invalidLabels = APIError(.invalidLabels, "labels must map strings to strings")
}
