import NIOCore
import Primitives

/// The fields a PD router adds to a request so its decode worker can fetch the KV cache from its
/// prefill worker (SGLang's disaggregation handshake): the prefill's host, its bootstrap port
/// (or null) and a random room shared by both halves. A batch gets arrays, one room per element.
struct BootstrapFields: Equatable {
    var host: String
    var port: Int?
    /// One per batch element; a single request has one and sends scalars.
    var rooms: [UInt64]
    var isBatch: Bool

    /// Rooms are random integers in [0, 2^63 − 1], as the reference draws them.
    init<R: RandomNumberGenerator>(host: String, port: Int?, batchSize: Int?, using rng: inout R) {
        self.host = host
        self.port = port
        self.isBatch = batchSize != nil
        self.rooms = (0..<max(1, batchSize ?? 1)).map { _ in UInt64.random(in: 0...UInt64(Int64.max), using: &rng) }
    }

    /// The field names a client may not send itself (the router owns them).
    static let names: [StaticString] = ["bootstrap_host", "bootstrap_port", "bootstrap_room"]

    /// `body` (a JSON object, already validated) with the fields added.
    func inserted(into body: ByteBuffer, objectIsEmpty: Bool) -> ByteBuffer {
        let port = self.port.map(String.init) ?? "null"
        let hostJSON = JSONString.quote(host)
        var fields = ""
        if isBatch {
            // One list each, written element by element (no intermediate arrays of copies).
            fields.reserveCapacity(rooms.count * (hostJSON.utf8.count + port.utf8.count + 22) + 64)
            func list(_ name: String, _ element: (Int) -> Void) {
                fields += #""\#(name)":["#
                for i in rooms.indices {
                    if i > 0 { fields += "," }
                    element(i)
                }
                fields += "]"
            }
            list("bootstrap_host") { _ in fields += hostJSON }
            fields += ","
            list("bootstrap_port") { _ in fields += port }
            fields += ","
            list("bootstrap_room") { fields += String(rooms[$0]) }
        } else {
            fields = #""bootstrap_host":\#(hostJSON),"bootstrap_port":\#(port),"bootstrap_room":\#(rooms[0])"#
        }
        return JSONObjectBody.appending(fields, to: body, objectIsEmpty: objectIsEmpty)
    }
}
