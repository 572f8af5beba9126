/// What the memory history store holds, and what it lets go of first. Pure: time comes in as
/// an argument. Three kinds of record, each in the order it was stored (a conversation in the
/// order it was last used): responses, conversation items, conversations. Each kind has a count
/// bound, all share one byte bound, and every record expires after the retention; whatever has
/// to go is the oldest of its kind (for the byte bound, the oldest of all). The store applies
/// the evictions it is handed: an item leaves its conversation, a conversation takes its items.
struct HistoryLedger {
    enum Key: Hashable {
        case response(String)
        case item(conversation: String, id: String)
        case conversation(String)
        var kind: Kind {
            switch self {
            case .response: .responses
            case .item: .items
            case .conversation: .conversations
            }
        }
    }

    enum Kind: Int, CaseIterable, CustomStringConvertible {
        case responses, items, conversations
        var description: String { ["responses", "items", "conversations"][rawValue] }
    }

    struct Limits: Equatable {
        /// The reference gateway's defaults (`--history-memory-max-responses`, `-max-items`).
        var responses = 10_000
        var items = 100_000
        var conversations = 100_000
        /// `--history-memory-max-bytes`: what the records take, as JSON text, at most.
        var bytes = 256 << 20
        /// `--history-memory-retention-secs` in ms; 0 keeps records until a bound drops them.
        var retentionMs: UInt64 = 86_400_000
        func count(_ kind: Kind) -> Int { [responses, items, conversations][kind.rawValue] }
    }

    /// Why a record went.
    enum Reason: String { case count, bytes, retention }

    let limits: Limits
    private struct Entry { var bytes: Int; var stampMs: UInt64; var seq: Int }
    private var entries: [Key: Entry] = [:]
    /// Per kind, keys in the order stored (with the sequence number they were stored under: an
    /// entry touched or deleted since leaves a stale pair behind, skipped when reached).
    private var order: [[(key: Key, seq: Int)]] = [[], [], []]
    private var heads = [0, 0, 0]
    private var counts = [0, 0, 0]
    private var nextSeq = 0
    private(set) var bytes = 0

    init(limits: Limits) { self.limits = limits }

    func count(_ kind: Kind) -> Int { counts[kind.rawValue] }
    func contains(_ key: Key) -> Bool { entries[key] != nil }

    /// A record stored (or stored again: its size and age are renewed). Returns what has to go
    /// now, oldest first, with why; never the record just stored, unless it alone is over the
    /// byte bound.
    mutating func record(_ key: Key, bytes size: Int, nowMs: UInt64) -> [(Key, Reason)] {
        forget(key)
        nextSeq += 1
        entries[key] = Entry(bytes: size, stampMs: nowMs, seq: nextSeq)
        let k = key.kind.rawValue
        order[k].append((key, nextSeq))
        counts[k] += 1
        // Touches and deletions leave stale pairs: rebuild once they outnumber the live ones.
        if order[k].count - heads[k] > 2 * counts[k] + 1024 {
            order[k] = order[k][heads[k]...].filter { entries[$0.key]?.seq == $0.seq }
            heads[k] = 0
        }
        bytes += size
        return evictions(nowMs: nowMs)
    }

    /// A conversation was used (read or updated): it is kept as long as if it were new.
    mutating func touch(_ key: Key, nowMs: UInt64) {
        guard let e = entries[key] else { return }
        _ = record(key, bytes: e.bytes, nowMs: nowMs)
    }

    /// A record deleted by hand.
    mutating func forget(_ key: Key) {
        guard let e = entries.removeValue(forKey: key) else { return }
        counts[key.kind.rawValue] -= 1
        bytes -= e.bytes
    }

    /// What has expired or is over a bound, oldest first.
    mutating func evictions(nowMs: UInt64) -> [(Key, Reason)] {
        var out: [(Key, Reason)] = []
        if limits.retentionMs > 0, nowMs > limits.retentionMs {
            let cutoff = nowMs - limits.retentionMs
            for kind in Kind.allCases {
                while let (key, e) = oldest(kind), e.stampMs < cutoff { drop(key, .retention, &out) }
            }
        }
        for kind in Kind.allCases {
            while counts[kind.rawValue] > limits.count(kind), let (key, _) = oldest(kind) { drop(key, .count, &out) }
        }
        while bytes > limits.bytes {
            let heads = Kind.allCases.compactMap { oldest($0) }
            guard let (key, _) = heads.min(by: { $0.1.seq < $1.1.seq }) else { break }
            drop(key, .bytes, &out)
        }
        return out
    }

    private mutating func drop(_ key: Key, _ reason: Reason, _ out: inout [(Key, Reason)]) {
        forget(key)
        out.append((key, reason))
    }

    /// The oldest live record of a kind; stale pairs at the head are passed over for good.
    private mutating func oldest(_ kind: Kind) -> (Key, Entry)? {
        let k = kind.rawValue
        while heads[k] < order[k].count {
            let (key, seq) = order[k][heads[k]]
            if let e = entries[key], e.seq == seq {
                compact(k)
                return (key, e)
            }
            heads[k] += 1
        }
        compact(k)
        return nil
    }

    /// Drops the passed-over part of an order list once it is most of it.
    private mutating func compact(_ k: Int) {
        guard heads[k] > 1024, heads[k] * 2 > order[k].count else { return }
        // (`oldest` returned nothing past this point yet, so no index it handed out moves.)
        order[k].removeFirst(heads[k])
        heads[k] = 0
    }
}
