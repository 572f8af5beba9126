/// Cuts routing text into fixed-size blocks and hashes each: the elements of the cache-aware
/// tree on the HTTP path. A block stands for `blockSize` prompt bytes (the radix path keeps
/// their order), so the tree holds 8 bytes per block instead of one entry per character, and a
/// summary shipped to other routers is a chain of block hashes, never prompt text.
/// A trailing partial block is not hashed: it cannot be matched as a whole block anyway.
public enum PromptBlocks {
    public static func hashes(_ text: [UInt8], blockSize: Int) -> [UInt64] {
        let n = text.count / blockSize
        guard n > 0 else { return [] }
        return [UInt64](unsafeUninitializedCapacity: n) { out, initialized in
            text.withUnsafeBytes { raw in
                for b in 0..<n {
                    out[b] = hashBlock(raw, from: b * blockSize, count: blockSize)
                }
            }
            initialized = n
        }
    }

    /// A 64-bit hash of `count` bytes: 8-byte words folded with a full-width multiply.
    @inline(__always)
    static func hashBlock(_ raw: UnsafeRawBufferPointer, from start: Int, count: Int) -> UInt64 {
        var h: UInt64 = 0x243F_6A88_85A3_08D3 ^ UInt64(count)
        var i = start
        let end = start + count
        while i + 8 <= end {
            let w = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            let m = (h ^ w).multipliedFullWidth(by: 0x9E37_79B9_7F4A_7C15)
            h = m.high ^ m.low
            i += 8
        }
        while i < end {
            let m = (h ^ UInt64(raw[i])).multipliedFullWidth(by: 0xC2B2_AE3D_27D4_EB4F)
            h = m.high ^ m.low
            i += 1
        }
        h = (h ^ (h >> 29)) &* 0xBF58_476D_1CE4_E5B9
        return h ^ (h >> 32)
    }

    /// A 64-bit hash of arbitrary bytes (routing keys, prefixes, ring points).
    public static func hash(_ bytes: some Collection<UInt8>) -> UInt64 {
        let a = Array(bytes)
        return a.withUnsafeBytes { hashBlock($0, from: 0, count: a.count) }
    }
}
