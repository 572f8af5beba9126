/// A hybrid logical clock stamp: wall-clock milliseconds, a logical counter for events within
/// the same millisecond (or behind a remote clock ahead of ours), and the node that made it,
/// so any two stamps are ordered: the last-writer-wins order of every replicated register.
public struct HLCStamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var wallMs: UInt64
    public var logical: UInt32
    public var node: UInt64

    public init(wallMs: UInt64, logical: UInt32, node: UInt64) {
        self.wallMs = wallMs
        self.logical = logical
        self.node = node
    }

    public static let zero = HLCStamp(wallMs: 0, logical: 0, node: 0)

    public static func < (a: HLCStamp, b: HLCStamp) -> Bool {
        (a.wallMs, a.logical, a.node) < (b.wallMs, b.logical, b.node)
    }

    public var description: String { "\(wallMs).\(logical)@\(String(node, radix: 16))" }
}

/// The clock itself (Kulkarni et al.): stamps never go backwards and always exceed every stamp
/// seen, while staying close to physical time. Physical time is an argument, never read.
public struct HybridLogicalClock: Sendable {
    public let node: UInt64
    public private(set) var last: HLCStamp

    public init(node: UInt64) {
        self.node = node
        self.last = HLCStamp(wallMs: 0, logical: 0, node: node)
    }

    /// A stamp for a local event at physical time `physicalMs`.
    public mutating func now(physicalMs: UInt64) -> HLCStamp {
        if physicalMs > last.wallMs {
            last = HLCStamp(wallMs: physicalMs, logical: 0, node: node)
        } else {
            last = HLCStamp(wallMs: last.wallMs, logical: last.logical &+ 1, node: node)
        }
        return last
    }

    /// Takes in a stamp from another node; the next local stamp will be above it.
    public mutating func observe(_ remote: HLCStamp, physicalMs: UInt64) {
        let wall = max(physicalMs, last.wallMs, remote.wallMs)
        var logical: UInt32 = 0
        if wall == last.wallMs && wall == remote.wallMs { logical = max(last.logical, remote.logical) &+ 1 }
        else if wall == last.wallMs { logical = last.logical &+ 1 }
        else if wall == remote.wallMs { logical = remote.logical &+ 1 }
        last = HLCStamp(wallMs: wall, logical: logical, node: node)
    }
}
