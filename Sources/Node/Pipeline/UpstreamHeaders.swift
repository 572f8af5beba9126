import NIOHTTP1

/// Header rewriting between the client and the worker. Headers that describe one hop (not the
/// message) are never forwarded as they are: the standard ones, `Proxy-*`, and any the client's
/// `Connection` header names (RFC 9110 §7.6.1); `expect` neither, since the router sends the
/// worker the whole body at once. The client's address is appended to `X-Forwarded-For`.
enum UpstreamHeaders {
    private static let hopByHop: [String] = ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
                                             "host", "content-length", "expect"]

    /// ASCII case-insensitive equality against a lowercase literal, without allocating.
    static func nameEquals(_ name: String, _ lower: String) -> Bool {
        name.utf8.count == lower.utf8.count && namePrefixEquals(name, lower)
    }

    /// Whether `name` starts with the lowercase literal `lower`, ASCII case-insensitively, without allocating.
    static func namePrefixEquals(_ name: String, _ lower: String) -> Bool {
        guard name.utf8.count >= lower.utf8.count else { return false }
        for (b, c) in zip(name.utf8, lower.utf8) where (b >= 65 && b <= 90 ? b | 0x20 : b) != c { return false }
        return true
    }

    private static func isHopByHop(_ name: String) -> Bool { hopByHop.contains { nameEquals(name, $0) } || isProxyHeader(name) }

    /// `Proxy-*` (`Proxy-Authorization`, `Proxy-Connection`, …): meant for a proxy, never a worker.
    private static func isProxyHeader(_ name: String) -> Bool {
        name.utf8.count > 6 && namePrefixEquals(name, "proxy-")
    }

    /// The head sent to `worker`: the client's headers less hop-by-hop ones, with the worker's
    /// host, the body's length, the request id and the worker's bearer token (which replaces
    /// the client's `authorization` when set).
    static func request(_ client: HTTPRequestHead, host: String, bodyLength: Int, requestID: String, bearer: String?,
                        clientAddress: String? = nil) -> HTTPRequestHead {
        var headers = HTTPHeaders()
        headers.reserveCapacity(client.headers.count + 5)
        let named = connectionNamed(client.headers)
        var forwardedFor: String?
        for (name, value) in client.headers where !isHopByHop(name) && !nameEquals(name, "x-request-id") {
            if bearer != nil, nameEquals(name, "authorization") { continue }
            if !named.isEmpty, named.contains(where: { nameEquals(name, $0) }) { continue }
            if nameEquals(name, "x-forwarded-for") {
                forwardedFor = forwardedFor.map { $0 + ", " + value } ?? value
                continue
            }
            headers.add(name: name, value: value)
        }
        if let clientAddress { forwardedFor = forwardedFor.map { $0 + ", " + clientAddress } ?? clientAddress }
        if let forwardedFor { headers.add(name: "x-forwarded-for", value: forwardedFor) }
        headers.add(name: "host", value: host)
        headers.add(name: "content-length", value: String(bodyLength))
        headers.add(name: "x-request-id", value: requestID)
        if let bearer { headers.add(name: "authorization", value: "Bearer " + bearer) }
        return HTTPRequestHead(version: .http1_1, method: client.method, uri: client.uri, headers: headers)
    }

    /// The lowercased header names a `Connection` header lists, other than its usual options
    /// (`keep-alive`, `close`), which are hop-by-hop already. Empty for nearly every request.
    private static func connectionNamed(_ headers: HTTPHeaders) -> [String] {
        var out: [String] = []
        for value in headers[canonicalForm: "connection"] {
            let token = value.lowercased()
            if token != "keep-alive", token != "close" { out.append(String(token)) }
        }
        return out
    }

    /// The worker's response headers the client gets: hop-by-hop ones dropped except the
    /// content length (the router relays the body as it comes, framed the same way).
    static func response(_ worker: HTTPHeaders) -> HTTPHeaders {
        var headers = HTTPHeaders()
        headers.reserveCapacity(worker.count + 4)
        for (name, value) in worker where !isHopByHop(name) || nameEquals(name, "content-length") {
            headers.add(name: name, value: value)
        }
        return headers
    }
}
