/// Named timing presets, in the manner of memberlist's LAN/WAN/local configurations: the
/// numbers that decide how fast a failure is known and what an idle mesh costs, chosen once
/// with their reasons instead of scattered as literals.
extension MeshNode.Config {
    /// Routers behind one virtual IP on one network (round trips well under a millisecond).
    /// keepalived moves the VIP within about 3 s of a router's death, so the mesh must know as
    /// fast: a 250 ms protocol period with a 100 ms probe timeout and suspicion of 3 periods
    /// (at most 3× longer without confirmations) finds a dead router in ~1.5 s in a 3-node mesh
    /// and within 3 s on a busy 2-core machine, for about 1 KB/s sent per idle router
    /// (docs/mesh.md has the measurements).
    public static var lan: Self {
        var c = Self()
        c.swim.protocolPeriodMs = 250
        c.swim.probeTimeoutMs = 100
        c.swim.suspicionMult = 3
        c.swim.suspicionMaxMult = 3
        // Half a period of slack: a probe due soon rides on a peer's ping instead of a wake-up
        // of its own (an idle 10-router mesh woke each router ~4 times a second for probes).
        c.swim.probeEarlyMs = 125
        return c
    }

    /// Members across data centres or a lossy network: a 1 s period with 400 ms probes and
    /// longer suspicion (4×, up to 6×) trades detection speed (several seconds) for no false
    /// deaths under loss and slow links. These are also the defaults of `MeshNode.Config()`, which
    /// the simulations use.
    public static var wan: Self { Self() }
}
