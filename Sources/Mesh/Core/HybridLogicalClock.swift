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
///
/// Two guards against a peer's clock (a misconfigured router, or a bug): a remote wall clock is
/// followed at most `maxDriftMs` ahead of ours, so one peer cannot drag every later stamp of
/// this node into the far future; and the logical counter never wraps: at its maximum the next
/// stamp moves to the next millisecond instead of back to 0, so stamps stay increasing.
public struct HybridLogicalClock: Sendable {
    public let node: UInt64
    public private(set) var last: HLCStamp
    /// How far ahead of physical time a remote clock is followed (5 minutes by default).
    public let maxDriftMs: UInt64

    public init(node: UInt64, maxDriftMs: UInt64 = 300_000) {
        self.node = node
        self.maxDriftMs = maxDriftMs
        self.last = HLCStamp(wallMs: 0, logical: 0, node: node)
    }

    /// A stamp for a local event at physical time `physicalMs`.
    public mutating func now(physicalMs: UInt64) -> HLCStamp {
        if physicalMs > last.wallMs {
            last = HLCStamp(wallMs: physicalMs, logical: 0, node: node)
        } else {
            last = Self.after(wall: last.wallMs, logical: last.logical, node: node)
        }
        return last
    }

    /// Whether a remote stamp is further ahead of `physicalMs` than the clock follows.
    public func isAhead(_ remote: HLCStamp, physicalMs: UInt64) -> Bool {
        let (bound, overflow) = physicalMs.addingReportingOverflow(maxDriftMs)
        return !overflow && remote.wallMs > bound
    }

    /// Takes in a stamp from another node; the next local stamp will be above it (above its
    /// wall clock cut to `maxDriftMs` ahead of ours).
    public mutating func observe(_ remote: HLCStamp, physicalMs: UInt64) {
        let (bound, overflow) = physicalMs.addingReportingOverflow(maxDriftMs)
        let remoteWall = overflow ? remote.wallMs : min(remote.wallMs, bound)
        let remoteLogical = remoteWall == remote.wallMs ? remote.logical : 0
        let wall = max(physicalMs, last.wallMs, remoteWall)
        if wall == last.wallMs && wall == remoteWall {
            last = Self.after(wall: wall, logical: max(last.logical, remoteLogical), node: node)
        } else if wall == last.wallMs {
            last = Self.after(wall: wall, logical: last.logical, node: node)
        } else if wall == remoteWall {
            last = Self.after(wall: wall, logical: remoteLogical, node: node)
        } else {
            last = HLCStamp(wallMs: wall, logical: 0, node: node)
        }
    }

    /// The stamp right after (wall, logical): the next logical count, or the next millisecond
    /// when the counter is full (never a wrap to 0, which would go backwards). At the very last
    /// millisecond the stamp stays where it is.
    private static func after(wall: UInt64, logical: UInt32, node: UInt64) -> HLCStamp {
        if logical < UInt32.max { return HLCStamp(wallMs: wall, logical: logical + 1, node: node) }
        if wall < UInt64.max { return HLCStamp(wallMs: wall + 1, logical: 0, node: node) }
        return HLCStamp(wallMs: wall, logical: logical, node: node)
    }
}
