import CSodium

/// The cluster key(s) that seal every mesh packet: 32 random bytes written as 64 hex
/// characters, one per line; the first line is the primary key (used to seal), the others are
/// still accepted (to open) so a key can be rotated without a flag day:
/// 1. add the new key as a second line everywhere, 2. move it to the first line everywhere,
/// 3. drop the old line.
public struct MeshKeyring: Sendable {
    public struct Key: Sendable {
        /// The first 4 bytes of BLAKE2b(key): names the key in each packet without revealing it.
        public let id: UInt32
        let bytes: [UInt8]
    }

    public enum ParseError: Error, CustomStringConvertible, Equatable {
        case empty
        case badLine(Int)
        public var description: String {
            switch self {
            case .empty: return "the mesh key is empty: expected 64 hex characters (see `smg mesh-keygen`)"
            case .badLine(let n): return "mesh key line \(n) is not 64 hex characters (32 bytes)"
            }
        }
    }

    public let keys: [Key]
    public var primary: Key { keys[0] }

    public init(parsing text: String) throws(ParseError) {
        guard sodium_init() >= 0 else { fatalError("libsodium failed to initialise") }
        var keys: [Key] = []
        for (i, raw) in text.split(whereSeparator: \.isNewline).enumerated() {
            let line = raw.filter { !$0.isWhitespace }
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard line.count == 64, let bytes = Self.hexBytes(line) else { throw .badLine(i + 1) }
            keys.append(Key(id: Self.keyID(bytes), bytes: bytes))
        }
        guard !keys.isEmpty else { throw .empty }
        self.keys = keys
    }

    public func key(id: UInt32) -> Key? { keys.first { $0.id == id } }

    /// A new random key, as one line of hex.
    public static func generate() -> String {
        _ = sodium_init()
        var key = [UInt8](repeating: 0, count: 32)
        randombytes_buf(&key, 32)
        return key.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    static func keyID(_ key: [UInt8]) -> UInt32 {
        var out = [UInt8](repeating: 0, count: 16)
        crypto_generichash(&out, 16, key, UInt64(key.count), nil, 0)
        return UInt32(out[0]) << 24 | UInt32(out[1]) << 16 | UInt32(out[2]) << 8 | UInt32(out[3])
    }

    static func hexBytes(_ s: String) -> [UInt8]? {
        var out: [UInt8] = []
        var high: UInt8?
        for c in s.utf8 {
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): v = c - UInt8(ascii: "A") + 10
            default: return nil
            }
            if let h = high { out.append(h << 4 | v); high = nil } else { high = v }
        }
        return high == nil ? out : nil
    }
}
