import NIOCore

/// Adding members to a request body the router has already validated as a JSON object, without
/// parsing it again: the text goes in before the closing brace.
enum JSONObjectBody {
    static func appending(_ members: String, to body: ByteBuffer, objectIsEmpty: Bool) -> ByteBuffer {
        let bytes = body.readableBytesView
        guard let close = bytes.lastIndex(of: UInt8(ascii: "}")) else { return body }
        var out = ByteBuffer()
        out.reserveCapacity(body.readableBytes + members.utf8.count + 1)
        out.writeBytes(bytes[bytes.startIndex..<close])
        if !objectIsEmpty { out.writeString(",") }
        out.writeString(members)
        out.writeBytes(bytes[close...])
        return out
    }
}
