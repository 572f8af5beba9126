import Foundation
import Mesh

extension MeshBridge {
    /// `GET /ha/status`: this router's view of the mesh (members, traffic, replication, stores);
    /// nil when the mesh is off.
    static func statusJSON(_ state: RouterState) -> String? {
        guard let mesh = state.mesh?.service else { return nil }
        let s = mesh.status()
        func number(_ v: UInt64?) -> Any { v.map { Int($0) as Any } ?? NSNull() }
        let members: [[String: Any]] = s.members.map { p in
            ["name": p.member.name, "address": p.member.address, "status": p.member.status.rawValue, "incarnation": p.member.incarnation,
             "generation": p.member.generation, "last_contact_ms": number(p.lastContactMsAgo),
             "lag_writes": number(p.lagWrites), "last_digest_ms": number(p.lastDigestMsAgo)]
        }
        var stores: [String: Any] = [:]
        for name in [MeshBridge.workersStore, MeshBridge.sessionsStore] { stores[name] = ["entries": 0, "tombstones": 0] }
        for store in s.stores { stores[store.name] = ["entries": store.entries, "tombstones": store.tombstones] }
        stores["cache_tree"] = "decisions pushed as they happen; a joining router gets every tree in full"
        return ControlAPI.json([
            "name": s.me.name, "address": s.me.address, "incarnation": s.me.incarnation, "generation": mesh.generation,
            "status": s.me.status.rawValue, "members": members,
            "alive": s.members.filter { $0.member.status == .alive }.count + 1,
            "traffic": ["udp_in": s.stats.packetsIn, "udp_out": s.stats.packetsOut, "tcp_in": s.stats.framesIn, "tcp_out": s.stats.framesOut,
                        "bytes_in": s.stats.bytesIn, "bytes_out": s.stats.bytesOut, "dropped": s.stats.dropped],
            "replication": ["vector": Dictionary(uniqueKeysWithValues: s.vector.counters.map { (String($0.key, radix: 16), Int($0.value)) }),
                            "pushed_writes": s.counters.pushed, "digests_sent": s.counters.digests, "answers_sent": s.counters.answers,
                            "full_states_sent": s.counters.fullStates, "tombstones_collected": s.counters.collected,
                            "rate_limit_share_routers": mesh.budgetShareCount],
            "stores": stores,
        ])
    }
}
