@testable import Node
import Testing

/// The expiry and bound of the replicated sessions store, decided from entries and clocks.
@Suite struct SessionReplicationTests {
    typealias S = SessionReplication
    let idle: UInt64 = 60_000

    func sweep(_ entries: [String: [UInt8]], now: UInt64, max: Int = 100, local: [String: UInt64] = [:]) -> [String: [UInt8]?] {
        Dictionary(uniqueKeysWithValues: S.sweep(entries: entries, nowMs: now, maxIdleMs: idle, maxEntries: max) { local[$0] }.map { ($0.key, $0.value) })
    }

    @Test func idleKeysExpireAndUsedOnesAreRefreshed() {
        let entries = ["m\u{0}old": S.value(worker: "w1", wallMs: 1_000), "m\u{0}recent": S.value(worker: "w2", wallMs: 50_000),
                       "m\u{0}busy": S.value(worker: "w3", wallMs: 2_000), "m\u{0}legacy": Array("w4".utf8)]
        let writes = sweep(entries, now: 70_000, local: ["m\u{0}busy": 69_000, "m\u{0}recent": 55_000])
        #expect(writes.keys.sorted() == ["m\u{0}busy", "m\u{0}old"])
        #expect(writes["m\u{0}old"] == .some(nil), "idle past --max-idle-secs everywhere: deleted")
        #expect(writes["m\u{0}busy"] == .some(S.value(worker: "w3", wallMs: 69_000)), "used here since: refreshed")
        // recent: used here 5 s after its stamp, less than a quarter of the idle time: no write.
        #expect(S.parse(S.value(worker: "w", wallMs: 7)) == ("w", 7) && S.parse(Array("w".utf8)) == ("w", nil))
    }

    @Test func theStoreIsCutToItsBoundLeastRecentlyUsedFirst() {
        var entries: [String: [UInt8]] = [:]
        for i in 0..<1000 { entries["\u{0}k\(i)"] = S.value(worker: "w", wallMs: UInt64(10_000 + i)) }
        let writes = sweep(entries, now: 20_000, max: 500)
        #expect(writes.count == 1000 - 450)
        #expect(writes.values.allSatisfy { $0 == nil })
        #expect(writes["\u{0}k0"] != nil && writes["\u{0}k999"] == nil, "the oldest go first")
    }

    @Test func longRoutingKeysAreStoredAsThePolicyStoresThem() {
        let long = String(repeating: "ключ", count: 500)  // 4,000 bytes of two-byte characters
        let key = S.key(policyKey: "m", routingKey: long)
        #expect(key.utf8.count < 300 && key.hasPrefix("m\u{0}#"))
        #expect(S.key(policyKey: "", routingKey: "short") == "\u{0}short")
    }
}
