/// A small, fast, seedable generator (SplitMix64). The router seeds one per connection from the
/// system generator; tests and the mesh simulator seed it with constants, so every decision and
/// every simulated run replays.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.finalize(state)
    }

    /// SplitMix64's output function: a well-spread 64-bit value of `x` (`mix` adds the
    /// generator's increment first, so that 0 does not map to 0). The mesh hashes vectors and
    /// member tables with it.
    public static func mix(_ x: UInt64) -> UInt64 { finalize(x &+ 0x9E37_79B9_7F4A_7C15) }

    static func finalize(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
