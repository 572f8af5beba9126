import NIOCore
import NIOHTTP1

/// A small request to a worker whose whole answer is collected: control-path calls such as
/// `/get_load` fan-out, `/flush_cache` and model discovery. One `UpstreamCall` on the same
/// per-loop pool as inference, so it gets the same deadline and fresh-connection resend.
final class UpstreamFetch: UpstreamCallDelegate {
    struct Response {
        let status: HTTPResponseStatus
        let body: ByteBuffer
    }

    /// An answer larger than this is cut here (control-path answers are small).
    static let maxBody = 16 << 20
    private var status: HTTPResponseStatus = .ok
    private var body = ByteBuffer()
    private let done: (Result<Response, any Error>) -> Void

    private init(done: @escaping (Result<Response, any Error>) -> Void) { self.done = done }

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
        // The call holds the fetch (its delegate) until it ends or fails.
        UpstreamCall(to: url, head: head, body: body, pool: pool).start(delegate: UpstreamFetch(done: done), timeout: timeout)
    }

    func callHead(_ call: UpstreamCall, _ head: HTTPResponseHead) { status = head.status }
    func callBody(_ call: UpstreamCall, _ buffer: ByteBuffer) {
        var b = buffer
        if body.readableBytes < Self.maxBody { body.writeBuffer(&b) }
    }
    func callReadComplete(_ call: UpstreamCall) {}
    func callEnded(_ call: UpstreamCall, reusable: Bool) {
        call.release(reusable: reusable)
        done(.success(Response(status: status, body: body)))
    }
    func callFailed(_ call: UpstreamCall, _ error: any Error) { done(.failure(error)) }
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
