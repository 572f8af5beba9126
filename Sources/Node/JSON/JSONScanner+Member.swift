// Reading the values `JSONScanner.scanObject` located: keys, strings (escapes decoded), booleans.

extension JSONScanner.Member {
    /// True when the key, unescaped, is `name`: `"mod\u0065l"` is `model`, as every JSON parser
    /// (the worker's too) reads it. Escaped keys take the slow path; clients rarely send them.
    public func keyEquals(_ name: StaticString, in bytes: UnsafeRawBufferPointer) -> Bool {
        guard keyHasEscapes else { return JSONScanner.keyMatches(bytes, key, name) }
        let decoded = JSONScanner.decodeEscaped(UnsafeRawBufferPointer(rebasing: bytes[key]))
        return decoded.utf8.elementsEqual(UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
    }

    /// The value as a Swift string, if it is a string without escapes (model names have none);
    /// escaped strings are decoded the slow way.
    public func stringValue(in bytes: UnsafeRawBufferPointer) -> String? {
        guard kind == .string else { return nil }
        let inner = UnsafeRawBufferPointer(rebasing: bytes[(value.lowerBound + 1)..<(value.upperBound - 1)])
        if !inner.contains(UInt8(ascii: "\\")) { return String(decoding: inner, as: UTF8.self) }
        return JSONScanner.decodeEscaped(inner)
    }

    public func boolValue(in bytes: UnsafeRawBufferPointer) -> Bool? {
        guard kind == .bool else { return nil }
        return bytes[value.lowerBound] == UInt8(ascii: "t")
    }
}

extension JSONScanner {
    /// Decodes the inside of an already validated JSON string that contains escapes.
    static func decodeEscaped(_ s: UnsafeRawBufferPointer) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(s.count)
        var k = 0
        func hex4(_ at: Int) -> UInt32 {
            var v: UInt32 = 0
            for j in 0..<4 {
                let c = s[at + j] | 0x20
                v = v << 4 + UInt32(c >= UInt8(ascii: "a") ? c - UInt8(ascii: "a") + 10 : c - UInt8(ascii: "0"))
            }
            return v
        }
        while k < s.count {
            let c = s[k]
            guard c == UInt8(ascii: "\\") else { out.append(c); k += 1; continue }
            let e = s[k + 1]
            k += 2
            switch e {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = hex4(k)
                k += 4
                if (0xD800..<0xDC00).contains(scalar), k + 6 <= s.count, s[k] == UInt8(ascii: "\\"), s[k + 1] == UInt8(ascii: "u") {
                    let low = hex4(k + 2)
                    if (0xDC00..<0xE000).contains(low) {
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        k += 6
                    }
                }
                let u = Unicode.Scalar(scalar) ?? "\u{FFFD}"
                out.append(contentsOf: Array(String(Character(u)).utf8))
            default: out.append(e)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
