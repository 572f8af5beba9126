import NIOHTTP1

/// What the router answers about the whole fleet: `/v1/models`, and the renderings of the
/// `/get_loads` and `/flush_cache` fan-outs (each worker asked, all answers rendered together).
enum FleetRoutes {
    static func models(_ registry: WorkerRegistry) -> ControlResponse {
        ControlResponse(json: [
            "object": "list",
            "data": .array(registry.models.map { ["id": .string($0), "object": "model", "created": 0, "owned_by": "smg"] }),
        ])
    }

    static func loads(_ results: [(Worker, UpstreamFetch.Response?)]) -> ControlResponse {
        ControlResponse(json: ["workers": .array(results.map { w, r in
            ["worker": .string(w.url.canonical), "load": r.flatMap(LoadMonitor.reportedLoad) ?? -1]
        })])
    }

    static func flushed(_ results: [(Worker, UpstreamFetch.Response?)]) -> ControlResponse {
        let failed = results.filter { $0.1?.status != .ok }.map { $0.0.url.canonical }
        let ok = results.count - failed.count
        let status: HTTPResponseStatus = failed.isEmpty ? .ok : (ok == 0 && !results.isEmpty ? .badGateway : .partialContent)
        return ControlResponse(status: status, json: ["status": failed.isEmpty ? "ok" : "partial", "flushed": .int(ok), "failed_workers": JSONValue(failed)])
    }
}
