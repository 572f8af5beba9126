/// The HA mesh of smg routers (issue #5): `Core/` will hold the pure, deterministic SWIM
/// membership and delta-CRDT replication (time and randomness as inputs, directives as
/// outputs); `Shell/` the SwiftNIO UDP/TCP transport on `--mesh-port` with libsodium sealing.
/// The router node reaches it only through one bridge type in `Sources/Node`.
public enum Mesh {
    /// The default mesh port of the reference gateway.
    public static let defaultPort = 39527
}
