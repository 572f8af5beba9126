import NIOCore
import NIOHTTP1

/// A small request to a worker whose whole answer is collected: control-path calls such as
/// `/get_load` fan-out, `/flush_cache` and model discovery. Uses the same per-loop pool.
final class UpstreamFetch: UpstreamResponseDelegate {
    struct Response {
        let status: HTTPResponseStatus
        let body: ByteBuffer
    }

    private let pool: UpstreamPool
    private let url: WorkerURL
    private let head: HTTPRequestHead
    private let requestBody: ByteBuffer?
    private var connection: PooledConnection?
    /// The request went out again on a fresh connection after a stale pooled one failed it.
    private var resent = false
    private var answered = false
    private var status: HTTPResponseStatus = .ok
    private var body = ByteBuffer()
    private var done: ((Result<Response, any Error>) -> Void)?
    private var timeout: Scheduled<Void>?
    /// Keeps the fetch alive while it runs, also before a connection holds it as its delegate.
    private var selfReference: UpstreamFetch?

    private init(pool: UpstreamPool, url: WorkerURL, head: HTTPRequestHead, body: ByteBuffer?, done: @escaping (Result<Response, any Error>) -> Void) {
        self.pool = pool
        self.url = url
        self.head = head
        self.requestBody = body
        self.done = done
    }

    /// Sends `method path` to `url` and calls back on the pool's loop with the full answer.
    static func run(pool: UpstreamPool, url: WorkerURL, method: HTTPMethod, path: String, body: ByteBuffer? = nil, bearer: String? = nil,
                    timeout: TimeAmount, _ done: @escaping (Result<Response, any Error>) -> Void) {
        var headers = HTTPHeaders()
        headers.add(name: "host", value: url.hostHeader)
        headers.add(name: "user-agent", value: "smg")
        headers.add(name: "content-length", value: String(body?.readableBytes ?? 0))
        if body != nil { headers.add(name: "content-type", value: "application/json") }
        if let bearer { headers.add(name: "authorization", value: "Bearer \(bearer)") }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
        let fetch = UpstreamFetch(pool: pool, url: url, head: head, body: body, done: done)
        fetch.selfReference = fetch
        fetch.timeout = pool.loop.assumeIsolated().scheduleTask(in: timeout) { [weak fetch] in
            fetch?.connection?.channel.close(promise: nil)
            fetch?.finish(.failure(UpstreamError.timedOut))
        }
        fetch.send(fresh: false)
    }

    private func send(fresh: Bool) {
        pool.acquire(url, fresh: fresh) { [self] result in
            switch result {
            case .failure(let error): finish(.failure(error))
            case .success(let c):
                guard done != nil else { pool.release(c); return }
                connection = c
                c.handler.delegate = self
                c.send(head, body: requestBody)
            }
        }
    }

    private func finish(_ result: Result<Response, any Error>) {
        timeout?.cancel()
        timeout = nil
        let callback = done
        done = nil
        selfReference = nil
        callback?(result)
    }

    func upstreamHead(_ head: HTTPResponseHead) {
        answered = true
        status = head.status
    }
    func upstreamBody(_ buffer: ByteBuffer) {
        var b = buffer
        if body.readableBytes < 16 << 20 { body.writeBuffer(&b) }
    }
    func upstreamReadComplete() {}
    func upstreamEnd(reusable: Bool) {
        if let c = connection {
            if reusable { pool.release(c) } else { c.channel.close(promise: nil) }
        }
        connection = nil
        finish(.success(Response(status: status, body: body)))
    }
    func upstreamFailed(_ error: any Error) {
        let stale = connection?.handler.reused == true && !answered && !resent
        connection = nil
        // A pooled connection the worker had closed meanwhile: the request never reached it,
        // so it goes once more on a fresh connection, as an inference attempt's does.
        if stale, done != nil {
            resent = true
            return send(fresh: true)
        }
        finish(.failure(error))
    }
}

extension UpstreamFetch {
    /// `GET url` from async code (the router fetching something for itself, such as a JWKS):
    /// the body of a 200 answer, or an error that says what went wrong.
    static func get(_ url: ResourceURL, pools: UpstreamPools, timeout: TimeAmount) async throws -> [UInt8] {
        guard let loop = pools.loops.first else { throw FetchError("no event loop") }
        return try await withCheckedThrowingContinuation { continuation in
            loop.execute {
                run(pool: pools.pool(for: loop), url: url.server, method: .GET, path: url.target, timeout: timeout) { result in
                    switch result {
                    case .success(let r) where r.status == .ok: continuation.resume(returning: Array(r.body.readableBytesView))
                    case .success(let r): continuation.resume(throwing: FetchError("\(url.description) answered \(r.status.code)"))
                    case .failure(let error): continuation.resume(throwing: FetchError("\(url.description): \(error)"))
                    }
                }
            }
        }
    }

    struct FetchError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }
}
