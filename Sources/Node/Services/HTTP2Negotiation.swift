import NIOCore

/// `--upstream-http2`: asks each worker, when it is registered, whether it speaks HTTP/2 (h2c
/// by prior knowledge on cleartext, ALPN `h2` over TLS). A worker that answers with its
/// SETTINGS is called over one multiplexed connection per router loop from then on; one that
/// does not stays on HTTP/1.1 (SGLang and vLLM serve HTTP/1.1 only; h2 is for workers behind
/// a proxy that speaks it). A worker that cannot be reached yet is asked again, a few times,
/// with growing pauses; one that refuses HTTP/2 later on a new connection falls back to
/// HTTP/1.1 on every loop (`UpstreamPool.acquireStream`), and is asked again only when it is
/// registered again.
enum HTTP2Negotiation {
    /// How many times an unreachable worker is asked (after 1, 2, 4, 8 s).
    static let attempts = 5

    static func start(_ watch: WorkerWatch) {
        guard watch.config.upstreamHTTP2, let loop = watch.pools.loops.first else { return }
        watch.pools.onHTTP2Refused { url in
            guard let worker = watch.registry.all.first(where: { $0.url == url }), worker.speaksHTTP2 else { return }
            worker.setSpeaksHTTP2(false)
            watch.logger.warning("worker refused HTTP/2 on a new connection; calling it over HTTP/1.1", metadata: ["worker": "\(url.canonical)"])
        }
        watch.registry.onAdded { worker in loop.execute { ask(worker, watch: watch, on: loop, attempt: 1) } }
        for worker in watch.registry.all { loop.execute { ask(worker, watch: watch, on: loop, attempt: 1) } }
    }

    static func ask(_ worker: Worker, watch: WorkerWatch, on loop: any EventLoop, attempt: Int) {
        watch.pools.pool(for: loop).negotiateHTTP2(worker.url) { result in
            switch result {
            case .success(let yes):
                // This loop's pool knows already; the others learn it here.
                watch.pools.setHTTP2(worker.url, yes)
                worker.setSpeaksHTTP2(yes)
                watch.logger.info(yes ? "worker speaks HTTP/2: its calls are multiplexed" : "worker does not speak HTTP/2: HTTP/1.1",
                                  metadata: ["worker": "\(worker.url.canonical)"])
            case .failure(let error):
                // Not reachable yet (a worker registered before it listens): asked again while registered.
                guard attempt < attempts, watch.registry.all.contains(where: { $0 === worker }) else {
                    return watch.logger.info("worker not asked for HTTP/2 (unreachable): HTTP/1.1",
                                             metadata: ["worker": "\(worker.url.canonical)", "error": "\(error)"])
                }
                loop.scheduleTask(in: .seconds(1 << Int64(attempt - 1))) { ask(worker, watch: watch, on: loop, attempt: attempt + 1) }
            }
        }
    }
}
