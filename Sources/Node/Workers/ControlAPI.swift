import Foundation
import NIOCore
import NIOHTTP1

/// The control routes: worker management (`/workers…` and the legacy `/add_worker` forms),
/// `/v1/models`, `/get_loads` and `/flush_cache` answers. Rare calls, so plain Foundation JSON.
enum ControlAPI {
    struct Answer {
        var status: HTTPResponseStatus = .ok
        var body = ""
        var location: String?
        var error: APIError?
    }

    static func json(_ object: Any) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    static func describe(_ w: Worker) -> [String: Any] {
        [
            "id": w.id, "url": w.url.canonical, "model_id": w.modelID ?? NSNull(), "worker_type": w.workerType,
            "is_healthy": w.isHealthy, "is_draining": w.isDraining, "load": w.inFlight, "labels": w.labels,
            "reported_load": w.reportedLoad ?? NSNull(), "health": w.healthStatus.rawValue,
            "circuit_breaker": w.breakerState.rawValue, "has_api_key": w.apiKey != nil,
        ]
    }

    static func models(_ registry: WorkerRegistry) -> String {
        json(["object": "list", "data": registry.models.map { ["id": $0, "object": "model", "created": 0, "owned_by": "smg"] as [String: Any] }])
    }

    static func loads(_ results: [(Worker, UpstreamFetch.Response?)]) -> (HTTPResponseStatus, String) {
        let rows: [[String: Any]] = results.map { w, r in
            ["worker": w.url.canonical, "load": r.flatMap(workerLoad) ?? -1]
        }
        return (.ok, json(["workers": rows]))
    }

    /// The load a worker reports in its `GET /get_load` answer (`load`, else `num_reqs`), as sent.
    static func workerLoad(_ r: UpstreamFetch.Response) -> Any? {
        guard r.status == .ok, let obj = try? JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as? [String: Any] else { return nil }
        return obj["load"] ?? obj["num_reqs"]
    }

    static func flushed(_ results: [(Worker, UpstreamFetch.Response?)]) -> (HTTPResponseStatus, String) {
        let failed = results.filter { $0.1?.status != .ok }.map { $0.0.url.canonical }
        let ok = results.count - failed.count
        let status: HTTPResponseStatus = failed.isEmpty ? .ok : (ok == 0 && !results.isEmpty ? .badGateway : .partialContent)
        return (status, json(["status": failed.isEmpty ? "ok" : "partial", "flushed": ok, "failed_workers": failed]))
    }

    static func workers(_ route: Route, target: RequestTarget, body: ByteBuffer, state: RouterState) -> Answer {
        let registry = state.registry
        switch route {
        case .listWorkers:
            let all = registry.all
            return Answer(body: json(["workers": all.map(describe), "total": all.count,
                                      "stats": ["healthy": all.filter(\.isAvailable).count, "total_load": all.reduce(0) { $0 + $1.inFlight }]]))
        case .legacyListWorkers:
            return Answer(body: json(["urls": registry.all.map(\.url.canonical)]))
        case .getWorker(let id):
            guard let w = registry.worker(id: id) else { return Answer(error: workerNotFound(id)) }
            return Answer(body: json(describe(w)))
        case .addWorker:
            guard let obj = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] else {
                return Answer(error: .badRequest("invalid_json", "POST /workers expects a JSON object like {\"url\": \"http://host:port\"}"))
            }
            guard let raw = obj["url"] as? String else { return Answer(error: .badRequest("missing_url", "POST /workers: 'url' is required")) }
            let model = (obj["model_id"] as? String) ?? (obj["model"] as? String)
            let labels = (obj["labels"] as? [String: String]) ?? [:]
            return add(raw, model: model, labels: labels, apiKey: obj["api_key"] as? String, state: state, legacy: false)
        case .updateWorker(let id):
            guard let w = registry.worker(id: id) else { return Answer(error: workerNotFound(id)) }
            guard let obj = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] else {
                return Answer(error: .badRequest("invalid_json", "PATCH/PUT /workers/{id} expects a JSON object of fields to change"))
            }
            if let url = obj["url"] as? String, (try? WorkerURL(parsing: url))?.canonical != w.url.canonical {
                return Answer(error: .badRequest("url_immutable", "a worker's url cannot change; add a new worker and remove this one"))
            }
            let known: Set<String> = ["url", "model_id", "labels", "api_key"]
            if let unknown = obj.keys.first(where: { !known.contains($0) }) {
                return Answer(error: .badRequest("unknown_field", "unknown field '\(unknown)'; updatable: model_id, labels, api_key"))
            }
            if obj["labels"] != nil, !(obj["labels"] is [String: String]) { return Answer(error: .badRequest("invalid_labels", "labels must map strings to strings")) }
            if let m = obj["model_id"] as? String, !m.isEmpty { w.setModelID(m) }
            let apiKey: String?? = obj.keys.contains("api_key") ? .some(obj["api_key"] as? String) : .none
            w.update(labels: obj["labels"] as? [String: String], apiKey: apiKey)
            MeshBridge.published(w, state: state)
            state.logger.info("worker updated", metadata: ["worker": "\(w.url.canonical)", "fields": "\(obj.keys.sorted().joined(separator: ","))"])
            return Answer(body: json(describe(w)))
        case .legacyAddWorker:
            guard let raw = target.parameter("url"), !raw.isEmpty else { return Answer(error: .badRequest("missing_url", "add_worker needs ?url=http://host:port")) }
            return add(raw, model: nil, labels: [:], apiKey: nil, state: state, legacy: true)
        case .deleteWorker(let id):
            guard let w = registry.remove(id: id) else { return Answer(error: workerNotFound(id)) }
            removed(w, state: state)
            MeshBridge.removed(w.url, state: state)
            return Answer(status: .accepted, body: json(["id": w.id, "url": w.url.canonical, "status": "removed", "message": "worker removed from routing; its in-flight requests finish"]))
        case .legacyRemoveWorker:
            guard let raw = target.parameter("url"), let url = try? WorkerURL(parsing: raw) else {
                return Answer(error: .badRequest("missing_url", "remove_worker needs ?url=http://host:port"))
            }
            guard let w = registry.worker(url: url.canonical), registry.remove(id: w.id) != nil else { return Answer(error: workerNotFound(url.canonical)) }
            removed(w, state: state)
            MeshBridge.removed(w.url, state: state)
            return Answer(body: json(["status": "ok", "message": "Successfully removed worker: \(url.canonical)", "id": w.id]))
        default:
            return Answer(error: .routeNotFound(.GET, "/workers"))
        }
    }

    private static func add(_ raw: String, model: String?, labels: [String: String], apiKey: String?, state: RouterState, legacy: Bool) -> Answer {
        let url: WorkerURL
        do { url = try WorkerURL(parsing: raw) } catch { return Answer(error: .badRequest("invalid_url", error.message)) }
        do {
            let w = try state.registry.add(url: url, modelID: model, labels: labels, apiKey: apiKey)
            state.logger.info("worker added", metadata: ["worker": "\(w.url.canonical)", "id": "\(w.id)"])
            if model == nil { state.discovery.discover(w) }
            MeshBridge.published(w, state: state)
            if legacy { return Answer(body: json(["status": "ok", "message": "Successfully added worker: \(url.canonical)", "id": w.id])) }
            return Answer(status: .accepted, body: json(["id": w.id, "url": url.canonical, "status": "accepted", "message": "worker added"]), location: "/workers/\(w.id)")
        } catch {
            guard case .duplicate(let existing) = error else { return Answer(error: .badRequest("invalid_worker", "\(error)")) }
            return Answer(error: APIError(.conflict, type: "invalid_request_error", code: "worker_exists", "worker \(url.canonical) is already registered as \(existing)"))
        }
    }

    private static func removed(_ w: Worker, state: RouterState) {
        state.logger.info("worker removed", metadata: ["worker": "\(w.url.canonical)", "id": "\(w.id)", "in_flight": "\(w.inFlight)"])
        closeIdleConnections(to: w, state: state)
    }

    /// Drops pooled connections to a removed worker on every event loop.
    static func closeIdleConnections(to w: Worker, state: RouterState) {
        for loop in state.pools.loops {
            let pools = state.pools
            loop.execute { pools.pool(for: loop).closeIdle(to: w.url) }
        }
    }

    static func workerNotFound(_ id: String) -> APIError {
        APIError(.notFound, type: "not_found_error", code: "worker_not_found", "no worker \(id)")
    }
}
