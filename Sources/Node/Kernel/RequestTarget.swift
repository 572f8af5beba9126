/// Splits a request URI into its path and query parameters (percent-decoded).
struct RequestTarget {
    let path: Substring
    let query: Substring?

    init(_ uri: String) {
        if let q = uri.firstIndex(of: "?") {
            path = uri[..<q]
            query = uri[uri.index(after: q)...]
        } else {
            path = Substring(uri)
            query = nil
        }
    }

    func parameter(_ name: String) -> String? {
        guard let query else { return nil }
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            if kv.first.map(String.init) == name { return kv.count > 1 ? Self.percentDecode(kv[1]) : "" }
        }
        return nil
    }

    static func percentDecode(_ s: Substring) -> String {
        var out: [UInt8] = []
        let u = Array(s.utf8)
        var k = 0
        while k < u.count {
            if u[k] == UInt8(ascii: "%"), k + 2 < u.count, let v = UInt8(String(decoding: u[(k + 1)...(k + 2)], as: UTF8.self), radix: 16) {
                out.append(v)
                k += 3
            } else {
                out.append(u[k] == UInt8(ascii: "+") ? UInt8(ascii: " ") : u[k])
                k += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
