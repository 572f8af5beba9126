import Mesh

extension MeshBridge {
    /// `GET /ha/status`: this router's view of the mesh (members, traffic, replication, stores);
    /// nil when the mesh is off.
    static func statusJSON(_ state: RouterState) -> String? {
        guard let mesh = state.mesh?.service else { return nil }
        let s = mesh.status()
        func n(_ v: some BinaryInteger) -> JSONValue { .int(Int(truncatingIfNeeded: v)) }
        func n(_ v: UInt64?) -> JSONValue { v.map { n($0) } ?? .null }
        let members: [JSONValue] = s.members.map { p in
            ["name": .string(p.member.name), "address": .string(p.member.address), "status": .string(p.member.status.rawValue),
             "incarnation": n(p.member.incarnation), "generation": n(p.member.generation), "last_contact_ms": n(p.lastContactMsAgo),
             "lag_writes": n(p.lagWrites), "last_digest_ms": n(p.lastDigestMsAgo)]
        }
        var stores: [String: JSONValue] = [:]
        for name in [MeshBridge.workersStore, MeshBridge.sessionsStore] { stores[name] = ["entries": 0, "tombstones": 0] }
        for store in s.stores { stores[store.name] = ["entries": n(store.entries), "tombstones": n(store.tombstones)] }
        stores["cache_tree"] = "decisions pushed as they happen; a joining router is streamed every tree in full"
        let status: JSONValue = [
            "name": .string(s.me.name), "address": .string(s.me.address), "incarnation": n(s.me.incarnation), "generation": n(mesh.generation),
            "status": .string(s.me.status.rawValue), "members": .array(members), "sealed": .bool(mesh.isSealed),
            "alive": n(s.members.filter { $0.member.status == .alive }.count + 1),
            "traffic": ["udp_in": n(s.stats.packetsIn), "udp_out": n(s.stats.packetsOut), "tcp_in": n(s.stats.framesIn), "tcp_out": n(s.stats.framesOut),
                        "bytes_in": n(s.stats.bytesIn), "bytes_out": n(s.stats.bytesOut), "dropped": .object(s.stats.dropped.mapValues { n($0) })],
            "replication": ["vector": .object(Dictionary(uniqueKeysWithValues: s.vector.counters.map { (String($0.key, radix: 16), n($0.value)) })),
                            "pushed_writes": n(s.counters.pushed), "digests_sent": n(s.counters.digests), "answers_sent": n(s.counters.answers),
                            "full_states_sent": n(s.counters.fullStates), "tombstones_collected": n(s.counters.collected),
                            "rate_limit_share_routers": n(mesh.budgetShareCount), "stamps_ahead_of_clock": n(s.stampsAhead)],
            "stores": .object(stores),
        ]
        return status.render()
    }
}
