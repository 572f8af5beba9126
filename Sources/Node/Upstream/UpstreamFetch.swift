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
    private var connection: PooledConnection?
    private var status: HTTPResponseStatus = .ok
    private var body = ByteBuffer()
    private var done: ((Result<Response, any Error>) -> Void)?
    private var timeout: Scheduled<Void>?
    /// Keeps the fetch alive while it runs, also before a connection holds it as its delegate.
    private var selfReference: UpstreamFetch?

    private init(pool: UpstreamPool, done: @escaping (Result<Response, any Error>) -> Void) {
        self.pool = pool
        self.done = done
    }

    /// Sends `method path` to `url` and calls back on the pool's loop with the full answer.
    static func run(pool: UpstreamPool, url: WorkerURL, method: HTTPMethod, path: String, body: ByteBuffer? = nil, bearer: String? = nil,
                    timeout: TimeAmount, _ done: @escaping (Result<Response, any Error>) -> Void) {
        let fetch = UpstreamFetch(pool: pool, done: done)
        fetch.selfReference = fetch
        fetch.timeout = pool.loop.assumeIsolated().scheduleTask(in: timeout) { [weak fetch] in
            fetch?.connection?.channel.close(promise: nil)
            fetch?.finish(.failure(UpstreamError.timedOut))
        }
        pool.acquire(url) { result in
            switch result {
            case .failure(let error): fetch.finish(.failure(error))
            case .success(let c):
                guard fetch.done != nil else { pool.release(c); return }
                fetch.connection = c
                c.handler.delegate = fetch
                var headers = HTTPHeaders()
                headers.add(name: "host", value: url.hostHeader)
                headers.add(name: "user-agent", value: "smg")
                headers.add(name: "content-length", value: String(body?.readableBytes ?? 0))
                if body != nil { headers.add(name: "content-type", value: "application/json") }
                if let bearer { headers.add(name: "authorization", value: "Bearer \(bearer)") }
                let head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
                c.channel.write(HTTPClientRequestPart.head(head), promise: nil)
                if let body, body.readableBytes > 0 { c.channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil) }
                c.channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
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

    func upstreamHead(_ head: HTTPResponseHead) { status = head.status }
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
        connection = nil
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
