/// Fleet-wide load: how many requests every router of the mesh has in flight to each worker
/// (and to each of its data-parallel ranks), so that load-aware decisions (cache-aware's
/// balance check, `power_of_two`, the loads `GET /workers` shows) see a worker's whole load and
/// not the 1/N of it that one of N routers sends. Pure: what peers said and the time are inputs.
///
/// Each router tells the others its own counts (`LoadReport`: only workers with something in
/// flight; a worker missing from a report has none from that router) every gossip period in
/// which they changed, and again every `refreshMs` while any is non-zero, so a lost datagram is
/// repaired. A router adds to its own exact counts what each peer said last (`FleetLoadBook`);
/// a report older than `staleAfterMs` counts for nothing (its router died, left, or went idle
/// and stopped repeating zeros).
public struct LoadReport: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        /// The worker's canonical URL (what the mesh keys workers by).
        public var worker: String
        public var inFlight: Int
        /// In flight per data-parallel rank (empty when the router does not route by rank).
        public var ranks: [Int]
        public init(worker: String, inFlight: Int, ranks: [Int] = []) {
            self.worker = worker
            self.inFlight = inFlight
            self.ranks = ranks
        }
    }

    public var entries: [Entry]
    public init(entries: [Entry]) { self.entries = entries }

    public static let maxEntries = 10_000
    public static let maxRanks = 1024
    public static let maxCount = 1_000_000
    public static let maxURL = 2048

    /// Version 1: u16 entries, then each: u16 URL length, URL, u32 in flight, u16 ranks, u32 each.
    /// Entries past `maxBytes` are left out (a report stays one datagram): the busiest first.
    public func encoded(maxBytes: Int = 60_000) -> [UInt8] {
        var out: [UInt8] = [1, 0, 0]
        var count = 0
        for e in entries.sorted(by: { $0.inFlight > $1.inFlight }) where count < Self.maxEntries {
            let url = Array(e.worker.utf8)
            guard url.count <= Self.maxURL, e.ranks.count <= Self.maxRanks else { continue }
            guard out.count + 2 + url.count + 4 + 2 + 4 * e.ranks.count <= maxBytes else { break }
            Self.put16(&out, url.count)
            out += url
            Self.put32(&out, min(max(e.inFlight, 0), Self.maxCount))
            Self.put16(&out, e.ranks.count)
            for r in e.ranks { Self.put32(&out, min(max(r, 0), Self.maxCount)) }
            count += 1
        }
        out[1] = UInt8(count >> 8)
        out[2] = UInt8(count & 0xff)
        return out
    }

    /// Nil for anything that is not a whole, well-formed version-1 report within the bounds.
    public static func decode(_ bytes: [UInt8]) -> LoadReport? {
        var i = 0
        func u16() -> Int? {
            guard i + 2 <= bytes.count else { return nil }
            defer { i += 2 }
            return Int(bytes[i]) << 8 | Int(bytes[i + 1])
        }
        func u32() -> Int? {
            guard i + 4 <= bytes.count else { return nil }
            defer { i += 4 }
            return Int(bytes[i]) << 24 | Int(bytes[i + 1]) << 16 | Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
        }
        guard bytes.first == 1 else { return nil }
        i = 1
        guard let n = u16(), n <= maxEntries else { return nil }
        var entries: [Entry] = []
        entries.reserveCapacity(n)
        var seen = Set<String>()
        for _ in 0..<n {
            guard let length = u16(), length > 0, length <= maxURL, i + length <= bytes.count else { return nil }
            let url = String(decoding: bytes[i..<(i + length)], as: UTF8.self)
            i += length
            guard seen.insert(url).inserted, let inFlight = u32(), inFlight <= maxCount, let r = u16(), r <= maxRanks else { return nil }
            var ranks: [Int] = []
            for _ in 0..<r {
                guard let v = u32(), v <= maxCount else { return nil }
                ranks.append(v)
            }
            entries.append(Entry(worker: url, inFlight: inFlight, ranks: ranks))
        }
        guard i == bytes.count else { return nil }
        return LoadReport(entries: entries)
    }

    private static func put16(_ out: inout [UInt8], _ v: Int) { out += [UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
    private static func put32(_ out: inout [UInt8], _ v: Int) { out += [UInt8(v >> 24 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
}

/// What the other routers said last about their in-flight requests, and when.
public struct FleetLoadBook: Sendable {
    public struct Config: Sendable {
        /// A report not renewed for this long counts for nothing.
        public var staleAfterMs: UInt64 = 3000
        /// Peers tracked at most (a mesh's members; more is refused).
        public var maxPeers = 1024
        public init() {}
    }

    /// A worker's load over the other routers: in flight, and per rank.
    public struct Load: Sendable, Equatable {
        public var inFlight: Int
        public var ranks: [Int]
        public init(inFlight: Int = 0, ranks: [Int] = []) {
            self.inFlight = inFlight
            self.ranks = ranks
        }
    }

    public let config: Config
    private var reports: [String: (report: LoadReport, heardMs: UInt64)] = [:]

    public init(config: Config = Config()) { self.config = config }

    /// A peer's report replaces what it said before. False when refused (too many peers).
    @discardableResult
    public mutating func heard(from peer: String, _ report: LoadReport, nowMs: UInt64) -> Bool {
        if reports[peer] == nil {
            expire(nowMs: nowMs)
            guard reports.count < config.maxPeers else { return false }
        }
        reports[peer] = (report, nowMs)
        return true
    }

    /// Keeps only the peers `isPeer` accepts: one that left or died counts no more.
    public mutating func retain(_ isPeer: (String) -> Bool) {
        reports = reports.filter { isPeer($0.key) }
    }

    /// Drops reports older than `staleAfterMs`.
    public mutating func expire(nowMs: UInt64) {
        reports = reports.filter { nowMs &- $0.value.heardMs < config.staleAfterMs }
    }

    /// Each worker's load summed over the peers with a fresh report.
    public func totals(nowMs: UInt64) -> [String: Load] {
        var out: [String: Load] = [:]
        for (_, r) in reports where nowMs &- r.heardMs < config.staleAfterMs {
            for e in r.report.entries {
                var load = out[e.worker] ?? Load()
                load.inFlight += e.inFlight
                if load.ranks.count < e.ranks.count { load.ranks += Array(repeating: 0, count: e.ranks.count - load.ranks.count) }
                for (i, v) in e.ranks.enumerated() { load.ranks[i] += v }
                out[e.worker] = load
            }
        }
        return out
    }
}

/// When a router tells the others its counts: when they changed (at most once a gossip
/// period), and every `refreshMs` while any is non-zero or they changed lately (repairing a lost
/// report, and letting a last all-zero report arrive). Quiet when idle.
public struct LoadReportSchedule: Sendable {
    public var refreshMs: UInt64 = 1000
    /// After the counts last changed, keep repeating for this long even when all are zero.
    public var settleMs: UInt64 = 3000
    private var last = LoadReport(entries: [])
    private var lastSentMs: UInt64 = 0
    private var changedMs: UInt64 = 0
    /// Nothing was ever in flight: an idle router says nothing at all.
    private var quietSoFar = true

    public init() {}

    /// Whether reports are still due every tick: something is in flight, or the counts changed
    /// less than `settleMs` ago. Otherwise the mesh's timer may sleep.
    public func isReporting(nowMs: UInt64) -> Bool {
        !quietSoFar && (!last.entries.isEmpty || nowMs &- changedMs < settleMs)
    }

    /// Whether `report` (the counts now) should be sent at `nowMs`; if so, it counts as sent.
    public mutating func shouldSend(_ report: LoadReport, nowMs: UInt64) -> Bool {
        let changed = report != last
        if changed {
            last = report
            changedMs = nowMs
        }
        if !report.entries.isEmpty { quietSoFar = false }
        guard !quietSoFar else { return false }
        let busy = !report.entries.isEmpty || nowMs &- changedMs < settleMs
        guard changed || (busy && nowMs &- lastSentMs >= refreshMs) else { return false }
        lastSentMs = nowMs
        return true
    }
}
