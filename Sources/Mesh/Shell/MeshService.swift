#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Logging
import MeshCore
import NIOCore
import NIOPosix
import Synchronization
import Primitives

/// The mesh shell: the pure `MeshNode` driven by a timer on one event loop, its messages
/// sealed and carried over the mesh port. Small messages (probes, acks, pushed writes,
/// digests) go in UDP datagrams that fit one MTU; anything larger (membership push-pull,
/// anti-entropy answers, full states, big tree summaries) goes as a frame over a TCP
/// connection to the same port. This file only moves bytes, seals them, refuses what does
/// not open, and counts.
public final class MeshService: Sendable {
    public struct Config: Sendable {
        public var name: String
        public var bindHost: String
        public var port: Int
        /// `host:port` other nodes reach this one at.
        public var advertise: String
        public var peers: [String]
        /// nil: keyless, unsealed mode.
        public var keyring: MeshKeyring?
        public var node = MeshNode.Config()
        public var tickMs: Int64 = 50
        /// Inbound TCP connections at once (each peer opens one); more are closed at once.
        public var maxInboundConnections = 128
        /// A frame must arrive whole this long after its first byte, or its connection is closed.
        public var frameDeadline: TimeAmount = .seconds(30)
        /// An inbound connection without traffic this long is closed.
        public var idleTimeout: TimeAmount = .minutes(5)
        /// An inbound connection must deliver a frame that opens under the cluster key (the
        /// sealed hello every sender opens with) this soon, or it is closed: connections that
        /// send nothing cannot hold the inbound slots.
        public var helloDeadline: TimeAmount = .seconds(5)
        public init(name: String, bindHost: String, port: Int, advertise: String, peers: [String], keyring: MeshKeyring?) {
            self.name = name
            self.bindHost = bindHost
            self.port = port
            self.advertise = advertise
            self.peers = peers
            self.keyring = keyring
        }
    }

    /// A sealed message up to this size (plaintext) travels by UDP: below a 1500-byte MTU
    /// with the IP, UDP and sealing headers.
    public static let datagramLimit = 1400
    /// The largest TCP frame accepted (a full state of a big session store).
    public static let frameLimit = 64 << 20
    /// The largest frame accepted before a connection has delivered one frame that opened under
    /// the cluster key: a stranger can make a router buffer this much, not `frameLimit`. Senders
    /// open every connection with a small sealed hello for this reason.
    public static let unauthenticatedFrameLimit = 64 << 10
    static let helloTopic = "mesh.hello"

    /// Counters for `/ha/status` and metrics.
    public struct Stats: Sendable {
        public var packetsIn = 0, packetsOut = 0, framesIn = 0, framesOut = 0, bytesIn = 0, bytesOut = 0
        public var dropped: [String: Int] = [:]
    }

    struct Inner {
        var node: MeshNode
        var rng: SplitMix64
        var counter: UInt64 = 0
        var datagramReplay = ReplayFilter()
        var frameReplay = ReplayFilter()
        var stats = Stats()
        var lastContact: [String: UInt64] = [:]
        /// When the last "peer clock ahead" warning was logged (monotonic ms; 0: never).
        var clockAheadWarnedAt: UInt64 = 0
        /// Resolved addresses: literal ones for good, names with when they were looked up.
        var addresses: [String: (address: SocketAddress, resolvedMs: UInt64, literal: Bool)] = [:]
        /// Names being looked up on a background thread now.
        var resolving: Set<String> = []
        var connections: [String: EventLoopFuture<any Channel>] = [:]
    }

    /// How many routers share a cluster-wide budget: this one plus every member seen that did
    /// not leave gracefully (a crashed or partitioned member keeps its share reserved).
    public var budgetShareCount: Int { inner.withLock { $0.node.budgetMembers.count + 1 } }

    /// Called with every key another router's write changed here (nil: deleted), on a mesh
    /// event loop, with the name of the member whose message carried it (its address when it is
    /// not a member yet): what the audit log names.
    public typealias ChangeHandler = @Sendable (_ store: String, _ key: String, _ value: [UInt8]?, _ from: String) -> Void
    /// In a struct: a bare closure in a `Mutex` is re-wrapped in thunks at every `withLock`,
    /// a chain that grows with every read (see `PeriodicTask.Waker`).
    private struct ChangeAction: Sendable { let run: ChangeHandler }
    private let onChange: Mutex<ChangeAction?> = Mutex(nil)
    public func onChange(_ handler: @escaping ChangeHandler) { onChange.withLock { $0 = ChangeAction(run: handler) } }

    /// Called with every custom message (topic, payload) from another router, with the address
    /// of the router that sent it: the envelope's sender, which the cluster key authenticates
    /// (what a payload says of its own origin is not).
    public typealias CustomHandler = @Sendable (_ topic: String, _ payload: [UInt8], _ sender: String) -> Void
    private let onCustom: Mutex<[CustomHandler]> = Mutex([])
    /// Adds a handler (each part of the router listens for its own topics).
    public func onCustom(_ handler: @escaping CustomHandler) { onCustom.withLock { $0.append(handler) } }

    /// Called with the address of every member that becomes alive (joined, restarted, or back
    /// from a partition): state kept outside the replicated stores can be sent to it.
    public typealias MemberHandler = @Sendable (_ address: String) -> Void
    private let onMemberAlive: Mutex<[MemberHandler]> = Mutex([])
    public func onMemberAlive(_ handler: @escaping MemberHandler) { onMemberAlive.withLock { $0.append(handler) } }

    /// Called after every protocol tick (on the mesh port's loop, while the protocol runs) with
    /// the tick's time: for periodic work of the mesh's users that should not wake the process
    /// on a timer of its own (an idle router's cost is its wake-ups). A handler returns true
    /// while it has work every `tickMs` (fleet loads while requests are in flight); while all
    /// return false, ticks come only when the protocol has something due.
    public typealias TickHandler = @Sendable (_ nowMs: UInt64) -> Bool
    private let onTick: Mutex<[TickHandler]> = Mutex([])
    public func onTick(_ handler: @escaping TickHandler) { onTick.withLock { $0.append(handler) } }

    /// Sends a custom message to every live member, at once (no retransmission: for state
    /// that is refreshed often anyway, like routing decisions).
    public func broadcast(topic: String, payload: [UInt8]) {
        guard payload.count <= WireCodec.maxPayload else { return }
        let peers = inner.withLock { $0.node.aliveMembers.map(\.address) }
        for peer in peers { send(.custom(topic: topic, payload: payload), to: peer) }
    }

    /// Sends a custom message to one member.
    public func send(topic: String, payload: [UInt8], to address: String) {
        guard payload.count <= WireCodec.maxPayload else { return }
        send(.custom(topic: topic, payload: payload), to: address)
    }

    /// Sends a custom message to one member over its TCP connection (whatever its size) and
    /// says when it was handed to the kernel: bulk transfers send their next piece then, so the
    /// receiver's pace, through TCP, sets the sender's, and nothing piles up in memory. Fails
    /// when the member cannot be reached or its connection closes first.
    public func stream(topic: String, payload: [UInt8], to address: String, on loop: any EventLoop) -> EventLoopFuture<Void> {
        guard payload.count <= WireCodec.maxPayload else { return loop.makeFailedFuture(MeshSendError.tooLarge) }
        let promise = loop.makePromise(of: Void.self)
        sendFrame(frameSealer.seal(envelope(.custom(topic: topic, payload: payload))), to: address, promise: promise)
        return promise.futureResult
    }

    /// Whether packets are sealed under a cluster key (false: keyless mode).
    public var isSealed: Bool { config.keyring != nil }

    /// Whether `address` is a member this router knows (alive or suspected): what a message from
    /// it says about that member can be kept.
    public func isMember(_ address: String) -> Bool {
        inner.withLock { s in s.node.members.values.contains { $0.address == address && ($0.status == .alive || $0.status == .suspect) } }
    }

    /// Whether any other router is alive (nothing to broadcast to otherwise).
    public var hasPeers: Bool { inner.withLock { !$0.node.aliveMembers.isEmpty } }

    public let config: Config
    public let generation: UInt64
    private let inner: Mutex<Inner>
    private let datagramSealer: Sealer
    private let frameSealer: Sealer
    private let logger: Logger
    private let channels: Mutex<(datagram: (any Channel)?, listener: (any Channel)?, group: (any EventLoopGroup)?, datagramFD: Int32, listenerFD: Int32)> =
        Mutex((nil, nil, nil, -1, -1))
    private let clock: @Sendable () -> UInt64
    /// The protocol timer, from `start` until `leave`: one tick scheduled at a time, at the
    /// node's next deadline (`MeshNode.nextDeadline`), every `tickMs` while a tick handler is
    /// busy or after `wake`, and at least once a second.
    private let ticker = Mutex<(task: Scheduled<Void>?, at: UInt64, loop: any EventLoop)?>(nil)
    /// Until when (clock ms) ticks come every `tickMs` whatever the handlers say (`wake`).
    private let fastUntil = Atomic<UInt64>(0)
    /// The longest the timer sleeps, and the shortest (deadlines a few ms apart share a tick).
    static let longestSleepMs: UInt64 = 1000, shortestSleepMs: UInt64 = 5
    /// Set when the service leaves: sockets that close then stay closed.
    private let stopping = Atomic<Bool>(false)
    private let lastSocketWarningMs = Atomic<UInt64>(0)

    public init(config: Config, generation: UInt64, logger: Logger, clock: @escaping @Sendable () -> UInt64) {
        self.config = config
        self.generation = generation
        self.datagramSealer = Sealer(keyring: config.keyring, maxPacket: 60_000)
        self.frameSealer = Sealer(keyring: config.keyring, maxPacket: Self.frameLimit)
        self.logger = logger
        self.clock = clock
        var seed = SystemRandomNumberGenerator()
        let node = MeshNode(name: config.name, address: config.advertise, generation: generation, origin: MeshNode.origin(name: config.name, generation: generation),
                            seeds: config.peers, config: config.node)
        self.inner = Mutex(Inner(node: node, rng: SplitMix64(seed: seed.next())))
    }

    /// The mesh port's two sockets as descriptors: what an in-place upgrade hands to the
    /// successor, and what a successor starts from (`start(group:ticking:inherited:)`).
    public struct Descriptors: Sendable, Equatable {
        public var datagram: Int32
        public var listener: Int32
        public init(datagram: Int32, listener: Int32) {
            self.datagram = datagram
            self.listener = listener
        }
    }

    /// Binds the mesh port (UDP and TCP), so a taken port fails the caller's start, or serves
    /// on `inherited` sockets (a predecessor's, in an in-place upgrade). `ticking`: start the
    /// protocol timer too; a router leaves that to its membership service (`startTicking`), so
    /// the protocol runs inside its service group's lifetime.
    public func start(group: any EventLoopGroup, ticking: Bool = true, inherited: Descriptors? = nil) async throws {
        let service = self
        let datagram = try await bindDatagram(group: group, inherited: inherited?.datagram).get()
        let listener: any Channel
        let listenerFD: Int32
        do {
            listenerFD = try inherited?.listener ?? BoundSocket.make(.stream, host: config.bindHost, port: config.port, backlog: 128)
            listener = try await ServerBootstrap(group: group)
                .childChannelInitializer { [config] channel in
                    channel.eventLoop.makeCompletedFuture {
                        guard service.inboundOpened() else {
                            service.countDrop("connection_limit")
                            channel.close(promise: nil)
                            return
                        }
                        channel.closeFuture.whenComplete { _ in service.inboundClosed() }
                        try channel.pipeline.syncOperations.addHandlers([
                            IdleStateHandler(readTimeout: config.idleTimeout),
                            MeshFrameReader(service: service, deadline: config.frameDeadline, helloDeadline: config.helloDeadline),
                        ])
                    }
                }
                .withBoundSocket(listenerFD).get()
        } catch {
            try? await datagram.close()
            throw error
        }
        channels.withLock { $0.listener = listener; $0.listenerFD = listenerFD; $0.group = group }
        watch(datagram, group: group)
        if ticking { startTicking() }
        logger.info(inherited == nil ? "mesh listening" : "mesh listening on the sockets taken over", metadata: [
            "name": "\(config.name)", "address": "\(config.advertise)", "peers": "\(config.peers.joined(separator: " "))"])
    }

    /// The mesh port's sockets while the service runs (they change when the UDP socket is
    /// reopened), nil once it left or handed over.
    public var descriptors: Descriptors? {
        guard !stopping.load(ordering: .relaxed) else { return nil }
        return channels.withLock { c in
            guard c.datagram != nil, c.listener != nil, c.datagramFD >= 0, c.listenerFD >= 0 else { return nil }
            return Descriptors(datagram: c.datagramFD, listener: c.listenerFD)
        }
    }

    /// Binds a new UDP socket, or serves on `inherited`; the channel and its descriptor become
    /// the service's current ones.
    private func bindDatagram(group: any EventLoopGroup, inherited: Int32? = nil) -> EventLoopFuture<any Channel> {
        let service = self
        let fd: Int32
        do { fd = try inherited ?? BoundSocket.make(.datagram, host: config.bindHost, port: config.port) } catch {
            return group.next().makeFailedFuture(error)
        }
        return DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(MeshDatagramHandler(service: service)) }
            }
            .withBoundSocket(fd)
            .map { channel in
                service.channels.withLock { $0.datagram = channel; $0.datagramFD = fd }
                return channel
            }
    }

    /// NIO closes a UDP channel on send errors it deems fatal, such as ENETDOWN or ENETUNREACH
    /// while the host's link is down (found in the VIP lab: a router whose link went down for a
    /// few seconds never rejoined the mesh). The mesh socket is therefore reopened whenever it
    /// closes while the service runs, after 100 ms and then backing off to 5 s while the bind fails.
    private func watch(_ datagram: any Channel, group: any EventLoopGroup) {
        datagram.closeFuture.whenComplete { [self] _ in
            guard !stopping.load(ordering: .relaxed) else { return }
            // While the link stays down every reopened socket closes again at its first send:
            // one warning a minute says so, not one per attempt.
            let now = clock()
            let last = lastSocketWarningMs.load(ordering: .relaxed)
            if last == 0 || now &- last >= 60_000 {
                lastSocketWarningMs.store(now, ordering: .relaxed)
                logger.warning("mesh: the UDP socket was closed by a network error; reopening it", metadata: ["port": "\(config.port)"])
            }
            reopenDatagram(group: group, after: .milliseconds(100))
        }
    }

    private func reopenDatagram(group: any EventLoopGroup, after delay: TimeAmount) {
        group.next().scheduleTask(in: delay) { [self] in
            guard !stopping.load(ordering: .relaxed) else { return }
            bindDatagram(group: group).whenComplete { [self] result in
                switch result {
                case .success(let channel):
                    guard !stopping.load(ordering: .relaxed) else { return channel.close(promise: nil) }
                    watch(channel, group: group)
                    logger.debug("mesh: UDP socket reopened", metadata: ["port": "\(config.port)"])
                case .failure:
                    reopenDatagram(group: group, after: min(delay * 2, .seconds(5)))
                }
            }
        }
    }

    /// Starts the protocol timer (probes, gossip, anti-entropy, and the tick handlers) on the
    /// mesh port's loop; `leave` stops it. Once: a second call does nothing.
    public func startTicking() {
        guard let loop = channels.withLock({ $0.datagram?.eventLoop }), !stopping.load(ordering: .relaxed) else { return }
        let first = ticker.withLock { current in
            guard current == nil else { return false }
            current = (nil, 0, loop)
            return true
        }
        if first { loop.execute { [self] in tick() } }
    }

    /// Replaces the peers this node asks to join (router pods found by discovery): new ones are
    /// asked within a few milliseconds.
    public func setSeeds(_ addresses: [String]) {
        inner.withLock { $0.node.setSeeds(addresses) }
        let now = clock()
        schedule(at: now, now: now)
    }

    /// Work is coming (a request began on an idle router): ticks every `tickMs` for the next
    /// second, starting within a few milliseconds, so that the fleet-load report goes out at
    /// once instead of at the protocol's next deadline.
    public func wake() {
        let now = clock()
        fastUntil.store(now + 1000, ordering: .relaxed)
        schedule(at: now, now: now)
    }

    /// One protocol tick, on the timer's loop, then the next one scheduled.
    private func tick() {
        guard !stopping.load(ordering: .relaxed) else { return }
        ticker.withLock { $0?.task = nil }
        let now = clock()
        let (out, deadline) = inner.withLock { s in (s.node.tick(now: now, using: &s.rng), s.node.nextDeadline) }
        execute(out)
        var busy = now < fastUntil.load(ordering: .relaxed)
        for handler in onTick.withLock({ $0 }) where handler(now) { busy = true }
        schedule(at: busy ? min(deadline, now + UInt64(config.tickMs)) : deadline, now: now)
    }

    /// Schedules the next tick at `at` (within `shortestSleepMs`…`longestSleepMs` of `now`),
    /// unless one is already scheduled no later.
    private func schedule(at: UInt64, now: UInt64) {
        let at = min(max(at, now + Self.shortestSleepMs), now + Self.longestSleepMs)
        ticker.withLock { current in
            guard let t = current, !stopping.load(ordering: .relaxed) else { return }
            if t.task != nil, t.at <= at + Self.shortestSleepMs { return }
            t.task?.cancel()
            let task = t.loop.scheduleTask(in: .milliseconds(Int64(at - now))) { [self] in tick() }
            current = (task, at, t.loop)
        }
    }

    /// Graceful leave: tells peers, then closes the port.
    public func leave() async {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
        let out = inner.withLock { $0.node.leave(now: clock()) }
        execute(out)
        logger.info("mesh: left the cluster", metadata: ["name": "\(config.name)"])
        // Give the datagrams a moment to go out before the sockets close.
        try? await Task.sleep(for: .milliseconds(50))
        await stop()
    }

    /// The successor of an in-place upgrade serves the mesh port now, under this node's name
    /// with a newer generation, which supersedes this one at every peer: no leave is announced
    /// (the name stays a member), the protocol stops, and this process's copies of the sockets
    /// close (the successor's stay open).
    public func handOver() async {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
        logger.info("mesh: handed over to the successor", metadata: ["name": "\(config.name)"])
        await stop()
    }

    private func stop() async {
        // No protocol tick after this: `stopping` is set, so a tick does nothing and schedules
        // nothing; the scheduled one is cancelled on the timer's loop, after any tick running there.
        if let ticker = ticker.withLock({ t in defer { t = nil }; return t }) {
            try? await ticker.loop.submit { ticker.task?.cancel() }.get()
        }
        let (datagram, listener) = channels.withLock { c in
            defer { c.datagramFD = -1; c.listenerFD = -1 }
            return (c.datagram, c.listener)
        }
        let outbound = inner.withLock { s in defer { s.connections = [:] }; return Array(s.connections.values) }
        for c in outbound { c.whenSuccess { $0.close(promise: nil) } }
        try? await datagram?.close()
        try? await listener?.close()
    }

    // MARK: traffic in

    enum Transport { case datagram, frame }

    /// Handles one datagram or frame; true when it opened under the cluster key and was fresh
    /// (not a replay), which is what makes an inbound connection trusted with big frames.
    /// `source` is where the bytes came from (the datagram's sender, the connection's peer).
    @discardableResult
    func received(_ bytes: [UInt8], over transport: Transport, from source: SocketAddress?) -> Bool {
        let now = clock()
        let sealer = transport == .datagram ? datagramSealer : frameSealer
        switch sealer.open(bytes) {
        case .failure(let refusal):
            inner.withLock { $0.stats.dropped[refusal.rawValue, default: 0] += 1 }
            return false
        case .success(let plain):
            guard let envelope = WireCodec.decode(plain) else {
                inner.withLock { $0.stats.dropped["malformed", default: 0] += 1 }
                return false
            }
            if !isSealed, !keylessSenderAdmitted(envelope.sender, source: source) {
                inner.withLock { $0.stats.dropped["unknown_sender", default: 0] += 1 }
                return false
            }
            enum Outcome { case node(MeshNode.Message, [MeshNode.Output], deadline: UInt64), custom(String, [UInt8], String), hello, none }
            let outcome: Outcome = inner.withLock { s in
                let fresh = transport == .datagram
                    ? s.datagramReplay.accept(sender: envelope.sender, generation: envelope.generation, counter: envelope.counter)
                    : s.frameReplay.accept(sender: envelope.sender, generation: envelope.generation, counter: envelope.counter)
                guard fresh else {
                    s.stats.dropped["replayed", default: 0] += 1
                    return .none
                }
                if transport == .datagram { s.stats.packetsIn += 1 } else { s.stats.framesIn += 1 }
                s.stats.bytesIn += bytes.count
                s.lastContact[envelope.sender] = now
                switch envelope.message {
                case .node(let m):
                    let refusedBefore = s.node.replicator.stampsAhead
                    let out = s.node.receive(m, from: envelope.sender, now: now, wallMs: wallClockMs(), using: &s.rng)
                    // A peer whose clock is ahead: said once a minute at most, not per packet.
                    if s.node.replicator.stampsAhead > refusedBefore, now &- s.clockAheadWarnedAt >= 60_000 || s.clockAheadWarnedAt == 0 {
                        s.clockAheadWarnedAt = now
                        logger.warning("mesh: refusing replicated writes stamped more than 5 minutes ahead of this router's clock; check the peer's clock (NTP), then restart it",
                                       metadata: ["peer": "\(envelope.sender)", "refused_total": "\(s.node.replicator.stampsAhead)"])
                    }
                    return .node(m, out, deadline: s.node.nextDeadline)
                case .custom(let topic, _) where topic == Self.helloTopic: return .hello
                case .custom(let topic, let payload): return .custom(topic, payload, envelope.sender)
                }
            }
            switch outcome {
            case .node(let message, let out, let deadline):
                MeshDebugLog.received(message, from: envelope.sender, logger: logger)
                execute(out, from: envelope.sender)
                // A message can bring the protocol's next deadline closer (a first member to
                // probe, a suspicion to time out): the timer wakes then, not at its old time.
                schedule(at: deadline, now: now)
            case .custom(let topic, let payload, let sender): for handler in onCustom.withLock({ $0 }) { handler(topic, payload, sender) }
            case .hello: break
            case .none: return false
            }
            return true
        }
    }

    /// Keyless mode has no key to tell a router from a stranger, so a packet is taken only from
    /// a router this one was told of (`--mesh-peer-urls`, or router pods found by discovery) or
    /// has learned of from them, and only
    /// when it comes from the address it claims: replies, which go to the claimed address, then
    /// go where the packet came from. A stranger's claimed name is never resolved or stored.
    private func keylessSenderAdmitted(_ claimed: String, source: SocketAddress?) -> Bool {
        guard let sourceIP = source?.ipAddress else { return false }
        let literal = Self.literalAddress(claimed)
        // A peer given by name matches once this router has resolved it (to send it a join).
        let known = inner.withLock { s in
            let peers = s.node.swim.joinTargets
            return peers.contains(claimed) || s.node.members.values.contains { $0.address == claimed }
                || (literal != nil && peers.contains { s.addresses[$0]?.address == literal })
        }
        guard known, let claimedAddress = literal ?? resolve(claimed) else { return false }
        return claimedAddress.ipAddress == sourceIP
    }

    /// `host:port` as a socket address when the host is an IP literal (no name lookup).
    static func literalAddress(_ address: String) -> SocketAddress? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        var host = address[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        return try? SocketAddress(ipAddress: String(host), port: port)
    }

    private let inbound = Atomic<Int>(0)
    /// Counts an inbound connection; false when the limit is reached (it is not counted then).
    func inboundOpened() -> Bool {
        let n = inbound.add(1, ordering: .relaxed).newValue
        if n > config.maxInboundConnections {
            inbound.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }
    func inboundClosed() { inbound.subtract(1, ordering: .relaxed) }

    private func execute(_ outputs: [MeshNode.Output], from sender: String? = nil) {
        guard !outputs.isEmpty else { return }
        var changes: [(String, String, [UInt8]?)] = []
        for o in outputs {
            switch o {
            case .send(let to, let message):
                MeshDebugLog.sent(message, to: to, logger: logger)
                send(.node(message), to: to)
            case .member(let m):
                logger.info("mesh member \(m.status.rawValue)", metadata: ["member": "\(m.name)", "address": "\(m.address)", "incarnation": "\(m.incarnation)"])
                if m.status == .alive { for h in onMemberAlive.withLock({ $0 }) { h(m.address) } }
                if m.status != .alive && m.status != .suspect { dropConnection(to: m.address) }
            case .changed(let store, let key, let value): changes.append((store, key, value))
            }
        }
        if !changes.isEmpty, let handler = onChange.withLock({ $0 })?.run {
            let from = sender.map { address in inner.withLock { s in s.node.members.values.first { $0.address == address }?.name } ?? address } ?? "?"
            for (store, key, value) in changes { handler(store, key, value, from) }
        }
    }

    // MARK: traffic out

    /// Seals and sends one message: a datagram if it fits one, a frame otherwise.
    private func send(_ message: MeshMessage, to address: String) {
        let plain = envelope(message)
        if plain.count <= Self.datagramLimit {
            sendDatagram(datagramSealer.seal(plain), to: address)
        } else {
            sendFrame(frameSealer.seal(plain), to: address)
        }
    }

    /// `message` in this node's envelope, under the next packet counter.
    private func envelope(_ message: MeshMessage) -> [UInt8] {
        inner.withLock { s in
            s.counter += 1
            return WireCodec.encode(.init(sender: config.advertise, generation: generation, counter: s.counter, message: message))
        }
    }

    private func sendDatagram(_ packet: [UInt8], to address: String) {
        guard let ch = channels.withLock({ $0.datagram }), let remote = resolve(address) else { return }
        inner.withLock { s in
            s.stats.packetsOut += 1
            s.stats.bytesOut += packet.count
        }
        ch.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: packet)), promise: nil)
    }

    /// Frames go over one outbound connection per peer, opened on first use and reopened
    /// after it fails; a frame that cannot be sent is dropped (anti-entropy repairs). `promise`
    /// completes when the frame was written, or fails when it never will be.
    private func sendFrame(_ sealed: [UInt8], to address: String, promise: EventLoopPromise<Void>? = nil) {
        guard let group = channels.withLock({ $0.group }), let remote = resolve(address) else {
            promise?.fail(MeshSendError.unreachable)
            return
        }
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(sealed.count))
        buffer.writeBytes(sealed)
        let frame = buffer
        let connection: EventLoopFuture<any Channel> = inner.withLock { s in
            s.stats.framesOut += 1
            s.stats.bytesOut += sealed.count + 4
            if let c = s.connections[address] { return c }
            // Every connection opens with a small sealed hello: the receiver accepts big frames
            // only on a connection that proved it holds the cluster key.
            s.counter += 1
            let hello = WireCodec.encode(.init(sender: config.advertise, generation: generation, counter: s.counter,
                                               message: .custom(topic: Self.helloTopic, payload: [])))
            let c = ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(2))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(MeshOutboundHandler()) }
                }
                .connect(to: remote)
            let sealedHello = frameSealer.seal(hello)
            c.whenSuccess { ch in
                var buffer = ByteBuffer()
                buffer.writeInteger(UInt32(sealedHello.count))
                buffer.writeBytes(sealedHello)
                ch.write(buffer, promise: nil)
            }
            s.connections[address] = c
            return c
        }
        connection.whenComplete { [self] result in
            switch result {
            case .success(let ch):
                ch.writeAndFlush(frame, promise: promise)
                ch.closeFuture.whenComplete { [self] _ in forget(connection, to: address) }
            case .failure(let error):
                inner.withLock { $0.stats.dropped["connect_failed", default: 0] += 1 }
                forget(connection, to: address)
                promise?.fail(error)
            }
        }
    }

    private func forget(_ connection: EventLoopFuture<any Channel>, to address: String) {
        inner.withLock { s in
            if s.connections[address] === connection { s.connections[address] = nil }
        }
    }

    private func dropConnection(to address: String) {
        let c = inner.withLock { s in s.connections.removeValue(forKey: address) }
        c?.whenSuccess { $0.close(promise: nil) }
    }

    // MARK: replication

    /// A local write to a replicated store (nil deletes): applied here and pushed to every
    /// live member at once; anti-entropy repairs what a lost packet missed.
    /// A key longer than `WireCodec.maxString`, or a value over `maxBlob`, is refused (logged):
    /// peers would store it cut,
    /// and the fingerprints of the two versions would disagree forever.
    public func publish(store: String, key: String, value: [UInt8]?) {
        guard key.utf8.count <= WireCodec.maxString, store.utf8.count <= WireCodec.maxString, (value?.count ?? 0) <= WireCodec.maxBlob else {
            logger.warning("mesh write refused: key or value too long", metadata: [
                "store": "\(store.prefix(64))", "key_bytes": "\(key.utf8.count)", "value_bytes": "\(value?.count ?? 0)"])
            return
        }
        let out = inner.withLock { s in s.node.write(store, key, value, wallMs: wallClockMs()) }
        execute(out)
    }

    /// The live entries of a store (status, tests).
    public func entries(of store: String) -> [String: [UInt8]] {
        inner.withLock { $0.node.values(of: store) }
    }

    /// `host:port` to a socket address. IP literals at once; names from a cache that a
    /// background thread fills (getaddrinfo blocks, and the mesh and data-plane loops never
    /// wait for DNS): a message to a name not resolved yet is dropped, and the protocol's own
    /// retries (joins every second, probes, anti-entropy) send it again once it is. A resolved
    /// name is looked up again in the background after `nameTTLMs`, so a peer that moved (a
    /// rescheduled pod) is found at its new address.
    private func resolve(_ address: String) -> SocketAddress? {
        let now = clock()
        let (cached, due) = inner.withLock { s -> (SocketAddress?, Bool) in
            guard let c = s.addresses[address] else { return (nil, !s.resolving.contains(address)) }
            return (c.address, c.literal ? false : now &- c.resolvedMs > Self.nameTTLMs && !s.resolving.contains(address))
        }
        if let cached, !due { return cached }
        if cached == nil, let literal = Self.literalAddress(address) {
            inner.withLock { $0.addresses[address] = (literal, now, true) }
            return literal
        }
        if due { resolveInBackground(address) }
        return cached
    }

    /// How long a resolved name is used before it is looked up again.
    static let nameTTLMs: UInt64 = 30_000

    private func resolveInBackground(_ address: String) {
        guard inner.withLock({ $0.resolving.insert(address).inserted }) else { return }
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            inner.withLock { _ = $0.resolving.remove(address) }
            return
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") { host = String(host.dropFirst().dropLast()) }
        let name = host
        DispatchQueue.global().async { [self] in
            let resolved = try? SocketAddress.makeAddressResolvingHost(name, port: port)
            let now = clock()
            inner.withLock { s in
                s.resolving.remove(address)
                if let resolved { s.addresses[address] = (resolved, now, false) }
            }
        }
    }

    // MARK: status

    public struct Status: Sendable {
        public struct Peer: Sendable {
            public var member: SwimNode.Member
            public var lastContactMsAgo: UInt64?
            /// Writes this node has seen that the peer had not, at its last digest.
            public var lagWrites: UInt64?
            public var lastDigestMsAgo: UInt64?
        }
        public struct Store: Sendable {
            public var name: String
            public var entries: Int
            public var tombstones: Int
        }
        public var me: SwimNode.Member
        public var members: [Peer]
        public var stats: Stats
        public var stores: [Store]
        public var vector: VersionVector
        public var counters: MeshNode.Counters
        /// Replicated entries received with a stamp further ahead than the clock follows.
        public var stampsAhead: Int
    }

    public func status() -> Status {
        let now = clock()
        return inner.withLock { s in
            let state = s.node.replicator.state
            return Status(
                me: s.node.me,
                members: s.node.members.values.sorted { $0.name < $1.name }.map { m in
                    Status.Peer(member: m, lastContactMsAgo: s.lastContact[m.address].map { now - $0 },
                                lagWrites: s.node.lag(of: m.name), lastDigestMsAgo: s.node.lastDigest[m.name].map { now - $0 })
                },
                stats: s.stats,
                stores: state.stores.keys.sorted().map { name in
                    let entries = state.stores[name]!
                    return Status.Store(name: name, entries: entries.values.filter { $0.value != nil }.count,
                                        tombstones: entries.values.filter { $0.value == nil }.count)
                },
                vector: s.node.replicator.vector, counters: s.node.counters, stampsAhead: s.node.replicator.stampsAhead)
        }
    }
}

/// Why `MeshService.stream` could not send.
public enum MeshSendError: Error, Sendable {
    /// The service is not running, or the address does not resolve.
    case unreachable
    /// The payload is over `WireCodec.maxPayload`.
    case tooLarge
}

/// Wall-clock milliseconds for HLC stamps (the only wall-clock read in the mesh shell), and for
/// what the router replicates with a time in it (sticky sessions' last use).
public func wallClockMs() -> UInt64 {
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
        service.received(Array(envelope.data.readableBytesView), over: .datagram, from: envelope.remoteAddress)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failed send to a dead peer (ICMP unreachable) must not close the mesh socket.
    }
}

/// Reads frames from an inbound mesh connection: a 4-byte big-endian length, then that many
/// sealed bytes, each handed to the service. What a connection can cost before it is trusted is
/// bounded: frames over `unauthenticatedFrameLimit` until one frame opened under the cluster
/// key, over `frameLimit` after; a frame not whole within `deadline` of its first byte (a peer
/// trickling bytes keeps no buffer alive forever); a frame that does not open on a connection not
/// yet trusted; no trusted frame within `helloDeadline` of connecting. Each of these closes the
/// connection and is counted.
final class MeshFrameReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let service: MeshService
    private let deadline: TimeAmount
    private let helloDeadline: TimeAmount
    private var buffer = ByteBuffer()
    private var trusted = false
    private var timer: Scheduled<Void>?
    private var helloTimer: Scheduled<Void>?

    init(service: MeshService, deadline: TimeAmount, helloDeadline: TimeAmount) {
        self.service = service
        self.deadline = deadline
        self.helloDeadline = helloDeadline
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startHelloTimer(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        startHelloTimer(context)
        context.fireChannelActive()
    }

    private func startHelloTimer(_ context: ChannelHandlerContext) {
        guard helloTimer == nil, !trusted else { return }
        helloTimer = context.eventLoop.assumeIsolated().scheduleTask(in: helloDeadline) { [self] in
            helloTimer = nil
            if !trusted { refuse("no_hello", context) }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer.writeBuffer(&bytes)
        var completed = false
        while let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) {
            let limit = (trusted ? MeshService.frameLimit : MeshService.unauthenticatedFrameLimit) + Sealer.headerSize + Sealer.tagSize
            guard Int(length) <= limit else { return refuse(trusted ? "oversized" : "oversized_untrusted", context) }
            guard buffer.readableBytes >= 4 + Int(length) else { break }
            buffer.moveReaderIndex(forwardBy: 4)
            let frame = buffer.readBytes(length: Int(length))!
            completed = true
            let authentic = service.received(frame, over: .frame, from: context.remoteAddress)
            if authentic {
                trusted = true
                helloTimer?.cancel()
                helloTimer = nil
            } else if !trusted {
                return refuse("untrusted_connection", context)
            }
        }
        if completed || buffer.readableBytes == 0 {
            timer?.cancel()
            timer = nil
        }
        if buffer.readableBytes == 0 {
            buffer.clear()
        } else if timer == nil {
            // A frame has begun: it must be whole by the deadline.
            timer = context.eventLoop.assumeIsolated().scheduleTask(in: deadline) { [self] in
                timer = nil
                refuse("frame_deadline", context)
            }
        }
    }

    private func refuse(_ reason: String, _ context: ChannelHandlerContext) {
        service.countDrop(reason)
        timer?.cancel()
        timer = nil
        helloTimer?.cancel()
        helloTimer = nil
        buffer = ByteBuffer()
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        helloTimer?.cancel()
        helloTimer = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) } else { context.fireUserInboundEventTriggered(event) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Outbound mesh connections only write; whatever comes back is ignored.
final class MeshOutboundHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

extension MeshService {
    public func countDrop(_ reason: String) { inner.withLock { $0.stats.dropped[reason, default: 0] += 1 } }
}
