import NIOCore
import NIOHTTP1

/// The routes the router answers itself: health and readiness, models, worker management,
/// mesh status, and the fan-outs to every worker. They are rare; none of them touches the
/// inference pipeline. Each answers through `done` on the connection's event loop (the
/// fan-outs after their workers answered); a failure is thrown or passed as an `APIError`.
enum ControlRoutes {
    static func answer(_ route: Route, head: HTTPRequestHead, body: ByteBuffer, tenant: String? = nil, state: RouterState, pool: UpstreamPool,
                       _ done: @escaping (Result<ControlResponse, APIError>) -> Void) {
        let target = RequestTarget(head.uri)
        switch route {
        case .health: done(.success(ControlResponse(json: ["status": "ok"])))
        case .readiness: done(.success(readiness(state)))
        case .meshStatus:
            guard let json = MeshBridge.statusJSON(state) else {
                return done(.failure(APIError(.meshDisabled, "the mesh is off: start smg with --enable-mesh")))
            }
            done(.success(ControlResponse(body: json)))
        case .dashboard: done(.success(Dashboard.page()))
        case .dashboardScript: done(.success(Dashboard.script()))
        case .dashboardStats: done(.success(Dashboard.stats(state)))
        case .models: done(.success(FleetRoutes.models(state.registry)))
        case .getLoads: fanOut(state: state, pool: pool, method: .GET, path: "/get_load", render: FleetRoutes.loads, done)
        case .flushCache: fanOut(state: state, pool: pool, method: .POST, path: "/flush_cache", render: FleetRoutes.flushed, done)
        case .corsPreflight:
            done(.success(ControlResponse(status: .noContent, body: "", contentType: nil, headers: state.cors.preflightHeaders(head.headers))))
        case .methodNotAllowed: done(.failure(.methodNotAllowed(head.method, String(target.path))))
        case .listWorkers, .addWorker, .getWorker, .deleteWorker, .updateWorker, .legacyAddWorker, .legacyRemoveWorker, .legacyListWorkers:
            do throws(APIError) {
                done(.success(try WorkerRoutes.answer(route, target: target, body: body, state: state)))
            } catch {
                done(.failure(error))
            }
        case .conversations(let path):
            // Storage is async (Redis): answered from a task, handed back on this connection's loop.
            let (store, metrics, method, uri, maxItemBytes) = (state.history, state.metrics, head.method, head.uri, state.config.historyMaxItemBytes)
            OffLoop.run(on: pool.loop, {
                await ConversationRoutes.answer(path, method: method, target: RequestTarget(uri), body: body, store: store, tenant: tenant,
                                                maxItemBytes: maxItemBytes, metrics: metrics)
            }, then: done)
        case .responses(let path):
            let (store, held, metrics, method, uri) = (state.history, state.heldTurns, state.metrics, head.method, head.uri)
            OffLoop.run(on: pool.loop, {
                await ResponsesRoutes.answer(path, method: method, target: RequestTarget(uri), store: store, held: held, tenant: tenant, metrics: metrics)
            }, then: done)
        case .notFound, .inference, .proxyToAnyWorker:
            done(.failure(.routeNotFound(head.method, String(target.path))))
        }
    }

    /// `GET /readiness`: ready while not draining and at least one worker can serve.
    static func readiness(_ state: RouterState) -> ControlResponse {
        let workers = state.registry.all
        let healthy = workers.filter(\.isAvailable).count
        var answer: [String: JSONValue] = ["status": "ready", "healthy_workers": .int(healthy), "total_workers": .int(workers.count)]
        guard !state.isDraining, healthy > 0 else {
            answer["status"] = "not_ready"
            answer["reason"] = state.isDraining ? "shutting_down" : "no_healthy_workers"
            return ControlResponse(status: .serviceUnavailable, json: .object(answer))
        }
        return ControlResponse(json: .object(answer))
    }

    /// Sends `method path` to every worker at once and renders all the answers together
    /// (a worker that fails or times out is rendered as missing).
    private static func fanOut(state: RouterState, pool: UpstreamPool, method: HTTPMethod, path: String,
                               render: @escaping ([(Worker, UpstreamFetch.Response?)]) -> ControlResponse,
                               _ done: @escaping (Result<ControlResponse, APIError>) -> Void) {
        let workers = state.registry.all
        func finish(_ results: [(Worker, UpstreamFetch.Response?)]) { done(.success(render(results))) }
        guard !workers.isEmpty else { return finish([]) }
        var results: [(Worker, UpstreamFetch.Response?)] = []
        let timeout = TimeAmount.seconds(Int64(min(state.config.requestTimeoutSecs, 30)))
        for w in workers {
            UpstreamFetch.run(pool: pool, url: w.url, method: method, path: path, timeout: timeout) { result in
                results.append((w, try? result.get()))
                if results.count == workers.count { finish(results) }
            }
        }
    }
}
