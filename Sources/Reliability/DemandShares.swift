import Foundation

/// A cluster-wide rate limit that follows demand: each router's share of the budget `total`
/// (requests per second for the whole mesh) is proportional to how many requests it is asked to
/// admit, so traffic that lands on one router (an active/backup VIP) gets about the whole budget,
/// and traffic spread over every router splits it. Pure: time and what peers said are inputs.
///
/// Each router estimates its own demand (requests asked for per second, an exponentially decayed
/// count) and tells the others every gossip period. A router computes its share from what it
/// heard recently and from what it told them last, not from its live estimate: every router then
/// divides the pool by the same numbers, so the shares add up to the pool even while demand
/// ramps up everywhere at once (with live estimates each router saw its own demand a gossip
/// period ahead of the others' and took too much: 1.13 R over 6 s from idle). Members it has not heard from for `staleAfterMs` (crashed, partitioned, just
/// joined) keep a fixed reserve of `total / members` each, which is what such a router falls back
/// to on its own: so the sides of a partition never add up to more than the budget. A small
/// floor of the shared pool is split evenly, so a router whose demand starts before the next
/// gossip is not at zero.
public struct DemandShares: Sendable {
    public struct Config: Sendable {
        public var total: Double
        /// The part of the pool split evenly whatever the demand.
        public var floorFraction: Double = 0.05
        /// Peers not heard from for this long count as absent (their reserve kept).
        public var staleAfterMs: UInt64 = 2000
        /// Time constant of the demand estimate.
        public var demandTauMs: Double = 1000
        public init(total: Double) { self.total = total }
    }

    public let config: Config
    private var demand: Double = 0
    private var demandAtMs: UInt64
    /// The demand this router told the others last: what its share is computed from.
    private var told: Double = 0
    private var peers: [String: (demand: Double, heardMs: UInt64)] = [:]

    public init(config: Config, nowMs: UInt64) {
        self.config = config
        demandAtMs = nowMs
    }

    /// This router's demand estimate (requests per second asked for) at `nowMs`.
    public func localDemand(nowMs: UInt64) -> Double {
        demand * decay(from: demandAtMs, to: nowMs)
    }

    /// One request asked this router for admission (admitted or not).
    public mutating func asked(nowMs: UInt64) {
        demand = localDemand(nowMs: nowMs) + 1000 / config.demandTauMs
        demandAtMs = max(demandAtMs, nowMs)
    }

    /// This router's demand now, to tell the others; its share is computed from it from now on.
    public mutating func tell(nowMs: UInt64) -> Double {
        told = localDemand(nowMs: nowMs)
        return told
    }

    /// A peer's demand, as it said it.
    public mutating func heard(from peer: String, demand: Double, nowMs: UInt64) {
        guard demand.isFinite, demand >= 0 else { return }
        peers[peer] = (demand, nowMs)
    }

    /// A peer left the cluster gracefully: its share is free.
    public mutating func forget(_ peer: String) { peers[peer] = nil }

    /// This router's rate (requests per second) at `nowMs`, with `members` routers in the budget
    /// (this one included; crashed and partitioned ones too, until they leave).
    public func share(nowMs: UInt64, members: Int) -> Double {
        let members = max(1, members)
        let fallback = config.total / Double(members)
        let fresh = peers.filter { nowMs < $0.value.heardMs || nowMs - $0.value.heardMs <= config.staleAfterMs }
        let present = min(members, fresh.count + 1)
        let pool = config.total - Double(members - present) * fallback
        let mine = told
        let sum = fresh.values.reduce(mine) { $0 + $1.demand }
        let even = pool / Double(present)
        guard sum > 0 else { return even }
        return config.floorFraction * even + (1 - config.floorFraction) * pool * mine / sum
    }

    private func decay(from: UInt64, to: UInt64) -> Double {
        guard to > from else { return 1 }
        return exp(-Double(to - from) / config.demandTauMs)
    }
}
