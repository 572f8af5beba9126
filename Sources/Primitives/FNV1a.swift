/// 64-bit FNV-1a: a stable hash of short byte strings (names, URLs, keys) that is the same in
/// every process and on every run — unlike `Hasher`, which is seeded per process. Routers use
/// it where they must agree: worker ids, mesh origins, store fingerprints.
public struct FNV1a: Sendable {
    public static let offsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325
    public static let prime: UInt64 = 0x100_0000_01b3

    public private(set) var value = FNV1a.offsetBasis
    public init() {}

    public mutating func add(_ byte: UInt8) { value = (value ^ UInt64(byte)) &* Self.prime }
    public mutating func add(_ bytes: some Sequence<UInt8>) { for b in bytes { add(b) } }
    /// The eight bytes of `v`, least significant first.
    public mutating func add(_ v: UInt64) { for k in 0..<8 { add(UInt8(truncatingIfNeeded: v >> (k * 8))) } }

    public static func hash(_ s: String) -> UInt64 {
        var h = FNV1a()
        h.add(s.utf8)
        return h.value
    }
}
