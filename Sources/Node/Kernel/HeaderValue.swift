/// Values that end up as HTTP header lines. Anything the router writes into a header that it did
/// not parse from a request itself (a worker's `api_key`, ids, labels, configured keys) is
/// checked here where it enters (flags, control routes, mesh updates), so no CR or LF can ever
/// split a header line or smuggle a second request onto a pooled connection.
enum HeaderValue {
    /// No C0 control character (tab allowed) and no DEL.
    static func isSafe(_ value: String) -> Bool {
        value.utf8.allSatisfy { ($0 >= 0x20 && $0 != 0x7F) || $0 == 0x09 }
    }
}
