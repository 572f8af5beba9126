#if canImport(Glibc)
import Glibc
#endif
import Logging
import MeshCore
import NIOCore
import NIOPosix
import Synchronization

/// The mesh shell: SWIM's messages sealed and carried over UDP on the mesh port, driven by a
/// timer on one event loop. Everything protocol-related happens in `SwimNode`; this only
/// moves bytes, seals them, refuses what does not open, and counts.
public final class MeshService: Sendable {
    public struct Config: Sendable {
        public var name: String
        public var bindHost: String
        public var port: Int
        /// `host:port` other nodes reach this one at.
        public var advertise: String
        public var peers: [String]
        public var keyring: MeshKeyring
        public var swim = SwimNode.Config()
        public var tickMs: Int64 = 50
        public init(name: String, bindHost: String, port: Int, advertise: String, peers: [String], keyring: MeshKeyring) {
            self.name = name
            self.bindHost = bindHost
            self.port = port
            self.advertise = advertise
            self.peers = peers
            self.keyring = keyring
        }
    }

    /// Counters for `/ha/status` and metrics.
    public struct Stats: Sendable {
        public var packetsIn = 0, packetsOut = 0, bytesIn = 0, bytesOut = 0
        public var dropped: [String: Int] = [:]
    }

    struct Inner {
        var swim: SwimNode
        var rng: SplitMix64
        var counter: UInt64 = 0
        var replay = ReplayFilter()
        var stats = Stats()
        var lastContact: [String: UInt64] = [:]
        var addresses: [String: SocketAddress] = [:]
        var replicator: Replicator
        var nextAntiEntropy: UInt64 = 0
        var nextCollection: UInt64 = 0
        /// Every member seen that has not left gracefully, dead ones included: the divisor of
        /// cluster-wide budgets, so a partitioned minority never takes more than its share.
        var budgetMembers: Set<String> = []
    }

    /// How many routers share a cluster-wide budget: this one plus every member seen that did
    /// not leave gracefully (a crashed or partitioned member keeps its share reserved).
    public var budgetShareCount: Int { inner.withLock { $0.budgetMembers.count + 1 } }

    /// Called with every entry another router's write changed here (on a mesh event loop).
    public typealias ChangeHandler = @Sendable (_ store: String, _ entry: ReplicationDelta.Entry) -> Void
    private let onChange: Mutex<ChangeHandler?> = Mutex(nil)
    public func onChange(_ handler: @escaping ChangeHandler) { onChange.withLock { $0 = handler } }

    /// Called with every custom message (topic, payload) from another router.
    public typealias CustomHandler = @Sendable (_ topic: String, _ payload: [UInt8]) -> Void
    private let onCustom: Mutex<CustomHandler?> = Mutex(nil)
    public func onCustom(_ handler: @escaping CustomHandler) { onCustom.withLock { $0 = handler } }

    /// Sends a custom message to every live member, at once (no retransmission: for state
    /// that is refreshed often anyway, like routing decisions).
    public func broadcast(topic: String, payload: [UInt8]) {
        guard payload.count <= WireCodec.maxPayload else { return }
        let peers = inner.withLock { $0.swim.aliveMembers.map(\.address) }
        for peer in peers { send(.custom(topic: topic, payload: payload), to: peer) }
    }

    /// Whether any other router is alive (nothing to broadcast to otherwise).
    public var hasPeers: Bool { inner.withLock { !$0.swim.aliveMembers.isEmpty } }

    public let config: Config
    public let generation: UInt64
    private let inner: Mutex<Inner>
    private let sealer: Sealer
    private let logger: Logger
    private let channel: Mutex<(any Channel)?> = Mutex(nil)
    private let clock: @Sendable () -> UInt64

    public init(config: Config, generation: UInt64, logger: Logger, clock: @escaping @Sendable () -> UInt64) {
        self.config = config
        self.generation = generation
        self.sealer = Sealer(keyring: config.keyring, maxPacket: 60_000)
        self.logger = logger
        self.clock = clock
        var seed = SystemRandomNumberGenerator()
        let swim = SwimNode(name: config.name, address: config.advertise, generation: generation, seeds: config.peers, config: config.swim)
        var nameHash: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in config.name.utf8 { nameHash = (nameHash ^ UInt64(b)) &* 0x100_0000_01b3 }
        self.inner = Mutex(Inner(swim: swim, rng: SplitMix64(state: seed.next()), replicator: Replicator(node: nameHash ^ generation)))
    }

    /// Binds the mesh port and starts the protocol timer.
    public func start(group: any EventLoopGroup) async throws {
        let service = self
        let ch = try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(MeshDatagramHandler(service: service)) }
            }
            .bind(host: config.bindHost, port: config.port).get()
        channel.withLock { $0 = ch }
        ch.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(config.tickMs)) { _ in
            let now = service.clock()
            let (out, digestTo) = service.inner.withLock { s -> ([SwimNode.Directive], (String, ReplicationDigest)?) in
                let out = s.swim.tick(now: now, using: &s.rng)
                // Anti-entropy: once a second, one live member gets our digest and sends back
                // whatever we lack.
                guard now >= s.nextAntiEntropy, let peer = s.swim.aliveMembers.randomElement(using: &s.rng) else { return (out, nil) }
                s.nextAntiEntropy = now + 1000
                if now >= s.nextCollection {
                    s.nextCollection = now + 60_000
                    s.replicator.collectTombstones(nowMs: wallClockMs())
                }
                return (out, (peer.address, s.replicator.digest(nowMs: wallClockMs())))
            }
            service.handle(out)
            if let (peer, digest) = digestTo { service.send(.digest(digest), to: peer) }
        }
        logger.info("mesh listening", metadata: ["name": "\(config.name)", "address": "\(config.advertise)", "peers": "\(config.peers.joined(separator: " "))"])
    }

    /// Graceful leave: tells peers, then closes the port.
    public func leave() async {
        let out = inner.withLock { $0.swim.leave(now: clock()) }
        handle(out)
        logger.info("mesh: left the cluster", metadata: ["name": "\(config.name)"])
        // Give the datagrams a moment to go out before the socket closes.
        try? await Task.sleep(for: .milliseconds(50))
        let ch = channel.withLock { $0 }
        try? await ch?.close()
    }

    // MARK: traffic

    func received(_ bytes: [UInt8], from source: SocketAddress) {
        let now = clock()
        switch sealer.open(bytes) {
        case .failure(let refusal):
            inner.withLock { $0.stats.dropped[refusal.rawValue, default: 0] += 1 }
        case .success(let plain):
            guard let envelope = WireCodec.decode(plain) else {
                inner.withLock { $0.stats.dropped["malformed", default: 0] += 1 }
                return
            }
            enum Outcome { case swim([SwimNode.Directive]), changes(String, [ReplicationDelta.Entry]), reply([ReplicationDelta]), custom(String, [UInt8]), none }
            let outcome: Outcome = inner.withLock { s in
                guard s.replay.accept(sender: envelope.sender, generation: envelope.generation, counter: envelope.counter) else {
                    s.stats.dropped["replayed", default: 0] += 1
                    return .none
                }
                s.stats.packetsIn += 1
                s.stats.bytesIn += bytes.count
                if let name = s.swim.members.values.first(where: { $0.address == envelope.sender })?.name { s.lastContact[name] = now }
                switch envelope.message {
                case .swim(let m): return .swim(s.swim.receive(m, from: envelope.sender, now: now, using: &s.rng))
                case .delta(let d): return .changes(d.store, s.replicator.applyCurrent(d, physicalMs: wallClockMs()))
                case .digest(let d): return .reply(s.replicator.missing(for: d, nowMs: wallClockMs()))
                case .custom(let topic, let payload): return .custom(topic, payload)
                }
            }
            switch outcome {
            case .swim(let out): handle(out)
            case .changes(let store, let entries):
                if let handler = onChange.withLock({ $0 }) { for e in entries { handler(store, e) } }
            case .reply(let deltas):
                for d in deltas { send(.delta(d), to: envelope.sender) }
            case .custom(let topic, let payload):
                onCustom.withLock { $0 }?(topic, payload)
            case .none: break
            }
        }
    }

    private func handle(_ directives: [SwimNode.Directive]) {
        guard !directives.isEmpty, let ch = channel.withLock({ $0 }) else { return }
        for d in directives {
            switch d {
            case .changed(let m):
                inner.withLock { s in
                    if m.status == .left { s.budgetMembers.remove(m.name) } else { s.budgetMembers.insert(m.name) }
                }
                logger.info("mesh member \(m.status.rawValue)", metadata: ["member": "\(m.name)", "address": "\(m.address)", "incarnation": "\(m.incarnation)"])
            case .send(let to, let message):
                send(.swim(message), to: to, on: ch)
            }
        }
    }

    /// Seals and sends one message.
    private func send(_ message: MeshMessage, to: String, on given: (any Channel)? = nil) {
        guard let ch = given ?? channel.withLock({ $0 }) else { return }
        let packet: [UInt8] = inner.withLock { s in
            s.counter += 1
            let bytes = sealer.seal(WireCodec.encode(.init(sender: config.advertise, generation: generation, counter: s.counter, message: message)))
            s.stats.packetsOut += 1
            s.stats.bytesOut += bytes.count
            return bytes
        }
        guard let address = resolve(to) else { return }
        ch.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: ByteBuffer(bytes: packet)), promise: nil)
    }

    // MARK: replication

    /// A local write to a replicated store (nil deletes): applied here and pushed to every
    /// live member at once; anti-entropy repairs what a lost packet missed.
    public func publish(store: String, key: String, value: [UInt8]?) {
        let (delta, peers) = inner.withLock { s in
            (s.replicator.set(store, key, value, physicalMs: wallClockMs()), s.swim.aliveMembers.map(\.address))
        }
        for peer in peers { send(.delta(delta), to: peer) }
    }

    /// The live entries of a store (status, tests).
    public func entries(of store: String) -> [String: [UInt8]] {
        inner.withLock { $0.replicator.stores[store]?.values ?? [:] }
    }

    /// `host:port` to a socket address (IP literals; names resolved once and cached).
    private func resolve(_ address: String) -> SocketAddress? {
        if let cached = inner.withLock({ $0.addresses[address] }) { return cached }
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("[") { host = String(host.dropFirst().dropLast()) }
        guard let resolved = try? SocketAddress.makeAddressResolvingHost(host, port: port) else { return nil }
        inner.withLock { $0.addresses[address] = resolved }
        return resolved
    }

    // MARK: status

    public struct Status: Sendable {
        public var me: SwimNode.Member
        public var members: [(member: SwimNode.Member, lastContactMsAgo: UInt64?)]
        public var stats: Stats
    }

    public func status() -> Status {
        let now = clock()
        return inner.withLock { s in
            Status(me: s.swim.me,
                   members: s.swim.members.values.sorted { $0.name < $1.name }.map { m in (m, s.lastContact[m.name].map { now - $0 }) },
                   stats: s.stats)
        }
    }
}

/// Wall-clock milliseconds for HLC stamps (the only wall-clock read in the mesh shell).
func wallClockMs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
}

/// Feeds datagrams to the service.
final class MeshDatagramHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let service: MeshService
    init(service: MeshService) { self.service = service }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        service.received(Array(envelope.data.readableBytesView), from: envelope.remoteAddress)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failed send to a dead peer (ICMP unreachable) must not close the mesh socket.
    }
}
