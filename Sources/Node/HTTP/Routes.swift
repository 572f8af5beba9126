import NIOHTTP1

/// The router's HTTP surface (the gateway's endpoints). A route is resolved from the request head alone, so
/// limits and errors can be decided before any body byte is read.
enum Route: Equatable, Sendable {
    enum Inference: String, Sendable {
        case generate, chat, completions, embeddings, rerank, classify
        /// The endpoint label used in metrics.
        var endpoint: String {
            switch self {
            case .generate: return "generate"
            case .chat: return "chat"
            case .completions: return "completions"
            case .embeddings: return "embeddings"
            case .rerank: return "rerank"
            case .classify: return "classify"
            }
        }
    }
    case inference(Inference)
    /// GETs answered by any healthy worker: `/get_model_info`, `/get_server_info`, `/health_generate`.
    case proxyToAnyWorker
    case models, health, readiness, getLoads, flushCache
    case listWorkers, addWorker, getWorker(String), deleteWorker(String), updateWorker(String)
    case legacyAddWorker, legacyRemoveWorker, legacyListWorkers
    case meshStatus
    /// The live cluster page (`/dashboard`, `/dashboard.js`: open, no data) and its numbers.
    case dashboard, dashboardScript, dashboardStats
    /// The Conversations API.
    case conversations(ConversationRoutes.Path)
    /// The Responses API: `create` runs through the request pipeline, the rest reads the store.
    case responses(ResponsesRoutes.Path)
    case corsPreflight
    case methodNotAllowed
    case notFound

    /// Conversations, their items and stored responses.
    var isStoredHistory: Bool {
        switch self {
        case .conversations, .responses: return true
        default: return false
        }
    }

    /// A bounded label for metrics: the route template, never the raw path.
    var metricPath: String {
        switch self {
        case .inference(let i):
            switch i {
            case .generate: return "/generate"
            case .chat: return "/v1/chat/completions"
            case .completions: return "/v1/completions"
            case .embeddings: return "/v1/embeddings"
            case .rerank: return "/v1/rerank"
            case .classify: return "/v1/classify"
            }
        case .proxyToAnyWorker: return "/proxy"
        case .models: return "/v1/models"
        case .health: return "/health"
        case .readiness: return "/readiness"
        case .getLoads: return "/get_loads"
        case .flushCache: return "/flush_cache"
        case .listWorkers, .addWorker: return "/workers"
        case .getWorker, .deleteWorker, .updateWorker: return "/workers/{id}"
        case .legacyAddWorker: return "/add_worker"
        case .legacyRemoveWorker: return "/remove_worker"
        case .legacyListWorkers: return "/list_workers"
        case .meshStatus: return "/ha/status"
        case .dashboard: return "/dashboard"
        case .dashboardScript: return "/dashboard.js"
        case .dashboardStats: return "/dashboard/stats"
        case .conversations(let p):
            switch p {
            case .create: return "/v1/conversations"
            case .conversation: return "/v1/conversations/{id}"
            case .items: return "/v1/conversations/{id}/items"
            case .item: return "/v1/conversations/{id}/items/{item_id}"
            }
        case .responses(let p):
            switch p {
            case .create: return "/v1/responses"
            case .response: return "/v1/responses/{id}"
            case .inputItems: return "/v1/responses/{id}/input_items"
            }
        case .corsPreflight: return "preflight"
        case .methodNotAllowed, .notFound: return "other"
        }
    }

    static func resolve(_ method: HTTPMethod, _ path: Substring) -> Route {
        if method == .OPTIONS { return .corsPreflight }
        func only(_ m: HTTPMethod, _ r: Route) -> Route { method == m ? r : .methodNotAllowed }
        switch path {
        case "/generate": return only(.POST, .inference(.generate))
        case "/v1/chat/completions": return only(.POST, .inference(.chat))
        case "/v1/completions": return only(.POST, .inference(.completions))
        case "/v1/embeddings": return only(.POST, .inference(.embeddings))
        case "/v1/rerank", "/rerank": return only(.POST, .inference(.rerank))
        case "/v1/classify": return only(.POST, .inference(.classify))
        case "/v1/models": return only(.GET, .models)
        case "/health", "/liveness": return only(.GET, .health)
        case "/readiness": return only(.GET, .readiness)
        case "/health_generate", "/get_model_info", "/get_server_info": return only(.GET, .proxyToAnyWorker)
        case "/get_loads": return only(.GET, .getLoads)
        case "/flush_cache": return only(.POST, .flushCache)
        case "/workers":
            switch method {
            case .GET: return .listWorkers
            case .POST: return .addWorker
            default: return .methodNotAllowed
            }
        case "/add_worker": return only(.POST, .legacyAddWorker)
        case "/remove_worker": return only(.POST, .legacyRemoveWorker)
        case "/list_workers": return only(.GET, .legacyListWorkers)
        case "/ha/status", "/mesh/status": return only(.GET, .meshStatus)
        case "/dashboard", "/dashboard/": return only(.GET, .dashboard)
        case "/dashboard.js": return only(.GET, .dashboardScript)
        case "/dashboard/stats": return only(.GET, .dashboardStats)
        default:
            if path == "/v1/conversations" || path.hasPrefix("/v1/conversations/") {
                guard let p = ConversationRoutes.resolve(path) else { return .notFound }
                switch (p, method) {
                case (.create, .POST), (.conversation, .GET), (.conversation, .POST), (.conversation, .DELETE),
                     (.items, .GET), (.items, .POST), (.item, .GET), (.item, .DELETE):
                    return .conversations(p)
                default: return .methodNotAllowed
                }
            }
            if path == "/v1/responses" || path.hasPrefix("/v1/responses/") {
                guard let p = ResponsesRoutes.resolve(path) else { return .notFound }
                switch (p, method) {
                case (.create, .POST), (.response, .GET), (.response, .DELETE), (.inputItems, .GET): return .responses(p)
                default: return .methodNotAllowed
                }
            }
            if path.hasPrefix("/workers/") {
                let id = String(path.dropFirst("/workers/".count))
                guard !id.isEmpty, !id.contains("/") else { return .notFound }
                switch method {
                case .GET: return .getWorker(id)
                case .DELETE: return .deleteWorker(id)
                case .PATCH, .PUT: return .updateWorker(id)
                default: return .methodNotAllowed
                }
            }
            return .notFound
        }
    }
}
