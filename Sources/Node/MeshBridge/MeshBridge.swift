import Foundation
import Mesh

/// The one place where mesh state and router state meet (policies never import the mesh).
///
/// Today it replicates the worker registry: a worker added or removed on any router, through
/// `--worker-urls` or the worker APIs, is added or removed on every router. Store "workers",
/// key: the worker's canonical URL, value: its settings as JSON (nil: removed), last writer
/// wins by hybrid logical clock.
enum MeshBridge {
    static let workersStore = "workers"

    /// Starts applying other routers' changes to this router.
    static func start(state: RouterState) {
        guard let mesh = state.mesh else { return }
        mesh.onChange { store, entry in
            guard store == workersStore else { return }
            apply(key: entry.key, value: entry.value, state: state)
        }
    }

    /// A worker was added or changed here: tell the others.
    static func published(_ w: Worker, state: RouterState) {
        guard let mesh = state.mesh else { return }
        var settings: [String: Any] = ["labels": w.labels]
        if let m = w.modelID { settings["model_id"] = m }
        if let k = w.apiKey { settings["api_key"] = k }
        let bytes = (try? JSONSerialization.data(withJSONObject: settings, options: [.sortedKeys])).map { Array($0) } ?? []
        mesh.publish(store: workersStore, key: w.url.canonical, value: bytes)
    }

    /// A worker was removed here: tell the others.
    static func removed(_ url: WorkerURL, state: RouterState) {
        state.mesh?.publish(store: workersStore, key: url.canonical, value: nil)
    }

    private static func apply(key: String, value: [UInt8]?, state: RouterState) {
        guard let url = try? WorkerURL(parsing: key) else { return }
        let existing = state.registry.worker(url: url.canonical)
        guard let value else {
            if let w = existing, let removed = state.registry.remove(id: w.id) {
                state.logger.info("worker removed (by another router)", metadata: ["worker": "\(removed.url.canonical)"])
                ControlAPI.closeIdleConnections(to: removed, state: state)
            }
            return
        }
        let settings = (try? JSONSerialization.jsonObject(with: Data(value)) as? [String: Any]) ?? [:]
        let model = settings["model_id"] as? String
        let labels = settings["labels"] as? [String: String] ?? [:]
        let apiKey = settings["api_key"] as? String
        if let w = existing {
            if let model { w.setModelID(model) }
            w.update(labels: labels, apiKey: .some(apiKey))
            return
        }
        guard let w = try? state.registry.add(url: url, modelID: model, labels: labels, apiKey: apiKey) else { return }
        state.logger.info("worker added (by another router)", metadata: ["worker": "\(w.url.canonical)", "id": "\(w.id)"])
        if model == nil { ModelDiscovery.start(for: w, state: state) }
    }
}
