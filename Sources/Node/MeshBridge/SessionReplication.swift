import Mesh
import NIOCore
import Policies

/// Sticky sessions of `manual` across the mesh: store "sessions", key: the registry key of the
/// policy that assigned it (the model, or "prefill:<model>" / "decode:<model>" in PD mode, where
/// a key has an assignment per half) + NUL + routing key (normalized as the policy stores it:
/// keys over 256 bytes by their hash), value: the candidate id (the worker's id, "id@rank" with
/// `--dp-aware`) + NUL + the wall-clock ms the key was last known in use.
///
/// The store is bounded and expires: each router, every `sweepInterval`, refreshes the time of
/// keys it used since (at most every quarter of `--max-idle-secs`, so a busy key costs one write
/// per quarter-idle period, not one per request), deletes keys nobody used for `--max-idle-secs`
/// and, past `maxEntries`, the least recently used. Deletions replicate: every router forgets
/// the key. A key in use anywhere is refreshed long before any router would expire it.
enum SessionReplication {
    static let store = "sessions"
    /// Replicated sessions at most: with keys of at most 256 bytes and model names of at most
    /// 512, a full state stays well under the mesh's 64 MiB frame.
    static let maxEntries = 50_000

    static func key(policyKey: String, routingKey: String) -> String {
        policyKey + "\u{0}" + ManualPolicy.normalize(routingKey)
    }

    static func value(worker: String, wallMs: UInt64) -> [UInt8] { Array((worker + "\u{0}" + String(wallMs)).utf8) }

    /// The worker and, when the value carries it, the last-use time.
    static func parse(_ value: [UInt8]) -> (worker: String, wallMs: UInt64?) {
        let text = String(decoding: value, as: UTF8.self)
        let parts = text.split(separator: "\u{0}", maxSplits: 1, omittingEmptySubsequences: false)
        return (String(parts[0]), parts.count > 1 ? UInt64(parts[1]) : nil)
    }

    /// A routing key was (re)assigned here: tell the others.
    static func assigned(routingKey: String, policyKey: String, candidate: String, state: RouterState) {
        state.mesh?.service.publish(store: store, key: key(policyKey: policyKey, routingKey: routingKey),
                                    value: value(worker: candidate, wallMs: wallClockMs()))
    }

    /// Another router's assignment (nil: the key was expired or dropped).
    static func applied(key: String, value: [UInt8]?, state: RouterState) {
        let parts = key.split(separator: "\u{0}", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return }
        let parsed = value.map(parse)
        // Adopted at the time it was last used, not now: adopting is not using, and a router
        // that joins late must not refresh every old key it was just told about.
        let monoNow = state.nowMs()
        let wallNow = wallClockMs()
        let age = parsed?.wallMs.map { wallNow &- min(wallNow, $0) } ?? 0
        state.registry.adoptAssignment(model: String(parts[0]), routingKey: String(parts[1]),
                                       worker: parsed?.worker, now: monoNow &- min(monoNow, age))
    }

    /// What one sweep writes, decided from the replicated entries, the time, and when this router
    /// last used each key (wall-clock ms, nil: not here). Pure, for tests.
    static func sweep(entries: [String: [UInt8]], nowMs: UInt64, maxIdleMs: UInt64, maxEntries: Int,
                      localUse: (String) -> UInt64?) -> [(key: String, value: [UInt8]?)] {
        var writes: [(key: String, value: [UInt8]?)] = []
        var kept: [(key: String, lastUse: UInt64)] = []
        kept.reserveCapacity(entries.count)
        for (key, raw) in entries {
            let (worker, stamp) = parse(raw)
            // A value without a time (an older router's) counts as fresh: age it from now on.
            let replicated = stamp ?? nowMs
            let local = localUse(key)
            let lastUse = max(replicated, local ?? 0)
            if nowMs > lastUse, nowMs - lastUse > maxIdleMs {
                writes.append((key, nil))
                continue
            }
            if let local, local > replicated, local - replicated > maxIdleMs / 4 {
                writes.append((key, value(worker: worker, wallMs: local)))
            }
            kept.append((key, lastUse))
        }
        if kept.count > maxEntries {
            // Down to 90% of the bound, least recently used first, so the next sweep has room.
            kept.sort { $0.lastUse < $1.lastUse }
            for victim in kept.prefix(kept.count - maxEntries * 9 / 10) { writes.append((victim.key, nil)) }
        }
        return writes
    }

    /// The periodic sweep (mesh on). It runs whatever `--policy` says: `manual` may also be the
    /// prefill or decode policy (PD mode) or a model's own (`--enable-igw`); over an empty store
    /// a sweep costs nothing.
    static func service(state: RouterState) -> PeriodicTask? {
        guard let mesh = state.mesh?.service, let loop = state.pools.loops.first else { return nil }
        let maxIdleMs = state.config.policyConfig.maxIdleSecs * 1000
        // Often enough that a used key is refreshed long before a quarter of the idle time runs out.
        let interval = TimeAmount.milliseconds(Int64(max(1000, min(60_000, maxIdleMs / 8))))
        return PeriodicTask("session expiry", on: loop, initialDelay: interval, every: interval) {
            let wallNow = wallClockMs()
            let monoNow = state.nowMs()
            let writes = sweep(entries: mesh.entries(of: store), nowMs: wallNow, maxIdleMs: maxIdleMs, maxEntries: maxEntries) { key in
                let parts = key.split(separator: "\u{0}", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2, let used = state.registry.sessionLastUse(model: String(parts[0]), routingKey: String(parts[1])) else { return nil }
                return wallNow - min(wallNow, monoNow &- min(monoNow, used))
            }
            for w in writes { mesh.publish(store: store, key: w.key, value: w.value) }
            let expired = writes.filter { $0.value == nil }.count
            if expired > 0 { state.log(.mesh).debug("sessions expired", metadata: ["count": "\(expired)"]) }
        }
    }
}
