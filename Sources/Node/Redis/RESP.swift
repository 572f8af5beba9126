import CHiredis
import NIOCore

/// RESP by hiredis: `redisFormatCommandArgv` writes commands, `redisReader` parses replies.
/// SwiftNIO does every byte of IO; hiredis never touches a socket.
enum RESP {
    /// Appends one command (binary-safe arguments) to `buffer`.
    static func format(_ args: [[UInt8]], into buffer: inout ByteBuffer) {
        var lengths = args.map { $0.count }
        // hiredis wants C pointers to each argument; an empty argument still needs a valid pointer.
        let storage = args.map { $0.isEmpty ? [UInt8(0)] : $0 }
        var target: UnsafeMutablePointer<CChar>?
        let count: Int32 = withPointers(storage) { pointers in
            pointers.withUnsafeMutableBufferPointer { p in
                lengths.withUnsafeMutableBufferPointer { l in
                    p.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: p.count) { argv in
                        redisFormatCommandArgv(&target, Int32(args.count), argv, l.baseAddress)
                    }
                }
            }
        }
        guard count > 0, let target else { return }
        buffer.writeBytes(UnsafeRawBufferPointer(start: target, count: Int(count)))
        redisFreeCommand(target)
    }

    /// Pointers to every argument's bytes, valid inside `body`.
    private static func withPointers<R>(_ args: [[UInt8]], _ body: (inout [UnsafePointer<UInt8>?]) -> R) -> R {
        var pointers: [UnsafePointer<UInt8>?] = []
        pointers.reserveCapacity(args.count)
        func recurse(_ i: Int) -> R {
            if i == args.count { return body(&pointers) }
            return args[i].withUnsafeBufferPointer { b in
                pointers.append(b.baseAddress)
                return recurse(i + 1)
            }
        }
        return recurse(0)
    }

    /// hiredis' incremental reply parser: feed bytes as they come, take whole replies out.
    final class Reader {
        private let reader: UnsafeMutablePointer<redisReader>

        init() { reader = redisReaderCreate() }
        deinit { redisReaderFree(reader) }

        func feed(_ buffer: ByteBuffer) {
            buffer.withUnsafeReadableBytes { bytes in
                guard let base = bytes.baseAddress else { return }
                _ = redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count)
            }
        }

        /// The next complete reply, nil when more bytes are needed; throws on malformed input.
        func next() throws(RedisError) -> RedisValue? {
            var raw: UnsafeMutableRawPointer?
            guard redisReaderGetReply(reader, &raw) == REDIS_OK else {
                let message = withUnsafePointer(to: reader.pointee.errstr) { p in
                    p.withMemoryRebound(to: CChar.self, capacity: 128) { String(cString: $0) }
                }
                throw .protocolError(message)
            }
            guard let raw else { return nil }
            defer { freeReplyObject(raw) }
            return Self.value(raw.assumingMemoryBound(to: redisReply.self))
        }

        private static func value(_ r: UnsafeMutablePointer<redisReply>) -> RedisValue {
            let reply = r.pointee
            func bytes() -> [UInt8] {
                guard let str = reply.str else { return [] }
                return Array(UnsafeRawBufferPointer(start: str, count: reply.len))
            }
            switch reply.type {
            case REDIS_REPLY_STRING: return .string(bytes())
            case REDIS_REPLY_STATUS: return .status(String(decoding: bytes(), as: UTF8.self))
            case REDIS_REPLY_ERROR: return .error(String(decoding: bytes(), as: UTF8.self))
            case REDIS_REPLY_INTEGER: return .integer(Int(reply.integer))
            case REDIS_REPLY_ARRAY:
                return .array((0..<reply.elements).map { value(reply.element[$0]!) })
            default: return .null
            }
        }
    }
}
