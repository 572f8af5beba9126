import Foundation
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

struct HTTPResponse {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]

    func header(_ name: String) -> String? { headers.first { $0.0 == name.lowercased() }?.1 }
    var text: String { String(decoding: body, as: UTF8.self) }
    func json() throws -> [String: Any] {
        guard let o = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { throw TestFailure("not a JSON object: \(text)") }
        return o
    }
    /// The `error.code` of a router error body.
    var errorCode: String? { ((try? json())?["error"] as? [String: Any])?["code"] as? String }
}

/// A deliberately small blocking HTTP/1.1 client on raw sockets, so tests control every byte:
/// partial bodies, slow writes, disconnects mid-stream, and the arrival time of each SSE event.
final class HTTPConnection {
    private let fd: Int32
    private var buffer: [UInt8] = []

    /// `from`: the local address to connect from (any of 127.0.0.0/8: another client).
    init(port: Int, timeout: Double = 30, from source: String? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed") }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else { Glibc.close(fd); throw TestFailure("bind to \(source) failed (errno \(errno))") }
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0 else { Glibc.close(fd); throw TestFailure("connect to 127.0.0.1:\(port) failed (errno \(errno))") }
    }

    deinit { Glibc.close(fd) }

    func close() { shutdown(fd, Int32(SHUT_RDWR)) }

    func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw TestFailure("send failed (errno \(errno))") }
            sent += n
        }
    }

    func send(_ s: String) throws { try send(Array(s.utf8)) }

    static func requestBytes(method: String, path: String, headers: [(String, String)], body: [UInt8]?) -> [UInt8] {
        var head = "\(method) \(path) HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body, !headers.contains(where: { $0.0.lowercased() == "content-length" || $0.0.lowercased() == "transfer-encoding" }) {
            head += "content-length: \(body.count)\r\n"
            if !headers.contains(where: { $0.0.lowercased() == "content-type" }) { head += "content-type: application/json\r\n" }
        }
        return Array((head + "\r\n").utf8) + (body ?? [])
    }

    /// What `drain` saw: the byte count, the first and last bytes, and whether the peer closed.
    struct Drained {
        var count = 0
        var head: [UInt8] = []
        var tail: [UInt8] = []
        var closed = false
        var headText: String { String(decoding: head, as: UTF8.self) }
        var tailText: String { String(decoding: tail, as: UTF8.self) }
    }

    /// Reads whatever arrives and throws it away (keeping the first 64 KiB and the last 4 KiB),
    /// until the peer closes, `done` says so, or `timeout` passes: a router relaying an endless
    /// or huge answer costs the test no memory.
    func drain(timeout: Duration, done: (Drained) -> Bool = { _ in false }) -> Drained {
        var d = Drained()
        d.head = buffer
        d.count = buffer.count
        buffer = []
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let deadline = ContinuousClock.now + timeout
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while ContinuousClock.now < deadline, !done(d) {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { d.closed = true; break }
            guard n > 0 else { continue }
            d.count += n
            if d.head.count < 1 << 16 { d.head += chunk[0..<min(n, (1 << 16) - d.head.count)] }
            d.tail = Array((d.tail + chunk[0..<n]).suffix(4096))
        }
        return d
    }

    /// Reads more bytes; false at end of stream.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n == 0 { return false }
        if n < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK { throw TestFailure("read timed out") }
            if errno == ECONNRESET { return false }
            throw TestFailure("recv failed (errno \(errno))")
        }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }

    private func line() throws -> String? {
        while true {
            if let i = buffer.indices.dropLast().first(where: { buffer[$0] == 13 && buffer[$0 + 1] == 10 }) {
                let l = String(decoding: buffer[..<i], as: UTF8.self)
                buffer.removeFirst(i + 2)
                return l
            }
            guard try fill() else { return nil }
        }
    }

    private func take(_ n: Int) throws -> [UInt8] {
        while buffer.count < n { guard try fill() else { throw TestFailure("connection closed mid-body") } }
        let out = Array(buffer[..<n])
        buffer.removeFirst(n)
        return out
    }

    func readHead() throws -> (Int, [(String, String)]) {
        guard let status = try line() else { throw TestFailure("connection closed before a response") }
        let parts = status.split(separator: " ")
        guard parts.count >= 2, let code = Int(parts[1]) else { throw TestFailure("bad status line '\(status)'") }
        var headers: [(String, String)] = []
        while let l = try line(), !l.isEmpty {
            guard let c = l.firstIndex(of: ":") else { continue }
            headers.append((l[..<c].lowercased(), l[l.index(after: c)...].trimmingCharacters(in: .whitespaces)))
        }
        return (code, headers)
    }

    /// Reads the body, calling `onData` with each piece as it arrives (chunked, sized or to close).
    func readBody(_ headers: [(String, String)], onData: ([UInt8]) throws -> Bool = { _ in true }) throws -> [UInt8] {
        var body: [UInt8] = []
        let h = { (n: String) in headers.first { $0.0 == n }?.1 }
        if h("transfer-encoding")?.lowercased() == "chunked" {
            while true {
                guard let sizeLine = try line(), let size = Int(sizeLine.split(separator: ";")[0], radix: 16) else { throw TestFailure("bad chunk") }
                if size == 0 { _ = try line(); break }
                let piece = try take(size)
                _ = try line()
                body += piece
                if try !onData(piece) { return body }
            }
        } else if let len = h("content-length").flatMap({ Int($0) }) {
            body = try take(len)
            _ = try onData(body)
        } else {
            while try fill() {}
            body = buffer
            buffer.removeAll()
            _ = try onData(body)
        }
        return body
    }

    func readResponse() throws -> HTTPResponse {
        let (status, headers) = try readHead()
        return HTTPResponse(status: status, headers: headers, body: try readBody(headers))
    }

    func request(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8]? = nil) throws -> HTTPResponse {
        try send(Self.requestBytes(method: method, path: path, headers: headers, body: body))
        return try readResponse()
    }
}

enum HTTPClient {
    static func request(port: Int, method: String, path: String, headers: [(String, String)] = [], body: [UInt8]? = nil) throws -> HTTPResponse {
        try HTTPConnection(port: port).request(method, path, headers: headers + [("connection", "close")], body: body)
    }
}

/// A server-sent event as the client saw it, with its arrival time.
struct ReceivedEvent {
    let data: String
    let at: ContinuousClock.Instant
}

extension HTTPConnection {
    /// Reads an SSE response, timestamping each event when its last byte arrives. Stops after
    /// `limit` events if given (leaving the stream unread).
    func readEvents(limit: Int? = nil) throws -> (status: Int, headers: [(String, String)], events: [ReceivedEvent]) {
        let (status, headers) = try readHead()
        var events: [ReceivedEvent] = []
        var pending = ""
        _ = try readBody(headers) { piece in
            pending += String(decoding: piece, as: UTF8.self)
            while let r = pending.range(of: "\n\n") {
                let event = String(pending[..<r.lowerBound])
                pending = String(pending[r.upperBound...])
                if event.hasPrefix("data: ") { events.append(ReceivedEvent(data: String(event.dropFirst(6)), at: .now)) }
                if let limit, events.count >= limit { return false }
            }
            return true
        }
        return (status, headers, events)
    }
}

extension HTTPConnection {
    /// Opens a connection and sends a streaming chat completion (or `body` to `path`).
    static func startStream(port: Int, path: String = "/v1/chat/completions",
                            body: String = #"{"stream":true,"messages":[{"role":"user","content":"hi"}]}"#) throws -> HTTPConnection {
        let c = try HTTPConnection(port: port)
        try c.send(requestBytes(method: "POST", path: path, headers: [], body: Array(body.utf8)))
        return c
    }
}
