import Mesh

extension MeshBridge {
    /// Mesh gauges, filled at scrape time from the mesh's own counters.
    static func updateGauges(_ state: RouterState) {
        guard let mesh = state.mesh else { return }
        let s = mesh.service.status()
        let metrics = state.metrics
        var byStatus = ["alive": 1]
        for p in s.members { byStatus[p.member.status.rawValue, default: 0] += 1 }
        for status in ["alive", "suspect", "dead", "left"] {
            metrics.setGauge("smg_mesh_members", "Mesh members by status in this router's view (itself included as alive)", [("status", status)], to: Double(byStatus[status] ?? 0))
        }
        metrics.setGauge("smg_mesh_sealed", "1 when mesh packets are sealed under a cluster key, 0 in keyless mode", to: mesh.service.isSealed ? 1 : 0)
        let traffic = "Mesh traffic since start: UDP datagrams and TCP frames"
        metrics.setGauge("smg_mesh_messages", traffic, [("direction", "in"), ("transport", "udp")], to: Double(s.stats.packetsIn))
        metrics.setGauge("smg_mesh_messages", traffic, [("direction", "out"), ("transport", "udp")], to: Double(s.stats.packetsOut))
        metrics.setGauge("smg_mesh_messages", traffic, [("direction", "in"), ("transport", "tcp")], to: Double(s.stats.framesIn))
        metrics.setGauge("smg_mesh_messages", traffic, [("direction", "out"), ("transport", "tcp")], to: Double(s.stats.framesOut))
        metrics.setGauge("smg_mesh_bytes", "Mesh bytes since start", [("direction", "in")], to: Double(s.stats.bytesIn))
        metrics.setGauge("smg_mesh_bytes", "Mesh bytes since start", [("direction", "out")], to: Double(s.stats.bytesOut))
        for (reason, n) in s.stats.dropped {
            metrics.setGauge("smg_mesh_dropped_packets", "Mesh packets and frames refused, by reason (unknown_key, forged, replayed, malformed, ...)", [("reason", reason)], to: Double(n))
        }
        for store in s.stores {
            metrics.setGauge("smg_mesh_store_entries", "Live entries of a replicated store", [("store", store.name)], to: Double(store.entries))
            metrics.setGauge("smg_mesh_store_tombstones", "Deletions not yet seen by every live member", [("store", store.name)], to: Double(store.tombstones))
        }
        for p in s.members where p.member.status == .alive || p.member.status == .suspect {
            if let lag = p.lagWrites {
                metrics.setGauge("smg_mesh_peer_lag_writes", "Writes this router has seen that the peer had not at its last digest", [("peer", p.member.name)], to: Double(lag))
            }
        }
        let sync = "Replication work since start"
        metrics.setGauge("smg_mesh_replication", sync, [("kind", "pushed_writes")], to: Double(s.counters.pushed))
        metrics.setGauge("smg_mesh_replication", sync, [("kind", "digests_sent")], to: Double(s.counters.digests))
        metrics.setGauge("smg_mesh_replication", sync, [("kind", "answers_sent")], to: Double(s.counters.answers))
        metrics.setGauge("smg_mesh_replication", sync, [("kind", "full_states_sent")], to: Double(s.counters.fullStates))
        metrics.setGauge("smg_mesh_replication", sync, [("kind", "tombstones_collected")], to: Double(s.counters.collected))
    }
}
