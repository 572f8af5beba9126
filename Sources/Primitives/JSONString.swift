/// JSON string quoting, shared by everything that writes JSON text by hand.
public enum JSONString {
    /// `s` as a quoted JSON string: quotes, backslashes and control characters escaped.
    public static func quote(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count + 2)
        append(s, to: &out)
        return out
    }

    /// Appends `s` quoted. Text with nothing to escape (nearly all of it) is appended whole;
    /// otherwise it is escaped byte by byte, which is exact because every character JSON
    /// escapes is ASCII and UTF-8 never uses ASCII bytes inside a multi-byte sequence.
    public static func append(_ s: String, to out: inout String) {
        var s = s
        let clean = s.withUTF8 { bytes in !bytes.contains { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C } }
        if clean {
            out += "\""
            out += s
            out += "\""
            return
        }
        var escaped: [UInt8] = [0x22]
        escaped.reserveCapacity(s.utf8.count + 16)
        for b in s.utf8 {
            switch b {
            case 0x22: escaped += [0x5C, 0x22]
            case 0x5C: escaped += [0x5C, 0x5C]
            case 0x0A: escaped += [0x5C, UInt8(ascii: "n")]
            case 0x0D: escaped += [0x5C, UInt8(ascii: "r")]
            case 0x09: escaped += [0x5C, UInt8(ascii: "t")]
            case ..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                escaped += [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(b >> 4)], hex[Int(b & 0xF)]]
            default: escaped.append(b)
            }
        }
        escaped.append(0x22)
        out += String(decoding: escaped, as: UTF8.self)
    }
}
