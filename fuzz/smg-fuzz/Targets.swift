// The targets reach into the router's internals (`@testable`), which only debug and fuzzing
// builds (`-enable-testing`) allow; a plain release build of the package compiles them out.
#if DEBUG || FUZZING
import Foundation
import Logging
@testable import Mesh
import MeshCore
import NIOCore
import NIOEmbedded
import NIOHTTP1
@testable import Node
import Policies
import Primitives
import Tracing

/// The parsers a stranger's bytes reach, one fuzz target each. A target returns normally for any
/// input; a crash, a sanitizer report or a broken invariant (`check`) is a finding.
enum FuzzTarget: String, CaseIterable {
    /// The inference body: the JSON scanner, the routing fields, the routing text of every kind.
    case json
    /// The mesh: a datagram or frame opened under a key, the wire codec, the replay filter.
    case wire
    /// Configuration: a YAML config file, and a command line (arguments split at NUL bytes).
    case config
    /// The API port: raw bytes into the HTTP decoder and the router's handler, on an embedded
    /// channel (authentication, routes, limits, the exchange up to worker selection).
    case http
    /// A JWT's header and claims, and a JWKS document (`Targets+Strangers.swift`, as the rest).
    case jwt
    /// The Conversations and Responses routes over a bounded memory store.
    case history
    /// What workers answer: streams, completions, PD logprobs, `/v1/models`, `/get_server_info`.
    case worker
    /// Redis replies (hiredis' reader).
    case redis
    /// The mesh above the codec: replicated workers, demand, frame reading.
    case mesh
    /// What workers' connections deliver, through the whole exchange (`Targets+Upstream.swift`).
    case upstream
    /// What a Kubernetes API server sends discovery: a watch stream cut anywhere, its events
    /// applied to the pod cache, and a pod list (`Targets+Strangers.swift`).
    case kube

    func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .json: Self.json(bytes)
        case .wire: Self.wire(Array(bytes))
        case .config: Self.config(Array(bytes))
        case .http: Self.http(Array(bytes))
        case .jwt: Self.jwt(Array(bytes))
        case .history: Self.history(Array(bytes))
        case .worker: Self.worker(Array(bytes))
        case .redis: Self.redis(Array(bytes))
        case .mesh: Self.mesh(Array(bytes))
        case .upstream: Self.upstream(Array(bytes))
        case .kube: Self.kube(Array(bytes))
        }
    }

    /// Replay prints what the router answered (`SMG_FUZZ_VERBOSE=1`), to see what an input does.
    nonisolated(unsafe) static var verbose = ProcessInfo.processInfo.environment["SMG_FUZZ_VERBOSE"] == "1"

    /// An invariant that must hold whatever the input: a failure is a finding.
    static func check(_ condition: Bool, _ what: @autoclosure () -> String) {
        if !condition { fatalError("invariant broken: \(what())") }
    }

    static func json(_ bytes: UnsafeRawBufferPointer) {
        // The control plane's parser: what it reads renders to text it reads back the same.
        if let value = JSONValue.parse(bytes) {
            let text = value.render()
            check(JSONValue.parse(Array(text.utf8))?.render() == text, "a parsed document round-trips through render")
        }
        guard let members = try? JSONScanner.scanObject(bytes) else { return }
        // One definition of JSON: a body the hot path takes is a document the tree is built from.
        check((try? JSONScanner.validate(bytes)) != nil, "an object the scanner reads validates as a document")
        for m in members {
            check(m.key.lowerBound >= 0 && m.key.upperBound <= bytes.count && m.value.upperBound <= bytes.count, "member ranges inside the body")
            for name in InferenceRequest.routingFields where m.keyEquals(name, in: bytes) {
                _ = m.stringValue(in: bytes)
                _ = m.boolValue(in: bytes)
            }
        }
        for kind in [Route.Inference.generate, .chat, .completions, .embeddings, .rerank, .classify] {
            let text = RoutingText.extract(kind, members: members, bytes: bytes)
            check(text.count <= RoutingText.maxBytes + 4, "routing text within its cap")
        }
        // How many requests the body stands for, under a bound drawn from the input: never more
        // than the bound, and a list is counted no further than it.
        let limit = 1 + Int(bytes.count % 7)
        var batch: Int?
        for kind in [Route.Inference.generate, .chat, .completions] {
            switch Batch.measure(kind, members: members, bytes: bytes, limit: limit) {
            case .size(let n):
                check(n == nil || (1...limit).contains(n!), "a batch within its bound (\(String(describing: n)) of \(limit))")
                batch = batch ?? n
            case .tooLarge(let what): check(!what.field.isEmpty, "a refusal names its field")
            }
        }
        // PD mode rewrites an accepted body without parsing it again: what comes out is the same
        // object with the bootstrap fields added, scalars or a list of `batch` each.
        // (A client's own bootstrap fields are refused before this point.)
        if case .object(let original)? = JSONValue.parse(bytes), !original.keys.contains(where: { $0.hasPrefix("bootstrap_") }) {
            var rng = SplitMix64(seed: UInt64(bytes.count))
            let fields = BootstrapFields(host: "198.18.0.1", port: 8998, batchSize: batch, using: &rng)
            let rewritten = fields.inserted(into: ByteBuffer(bytes: bytes), objectIsEmpty: members.isEmpty)
            guard case .object(let out)? = JSONValue.parse(Array(rewritten.readableBytesView)) else {
                return check(false, "a rewritten body parses: \(String(buffer: rewritten))")
            }
            check(out.count == original.count + 3 && original.allSatisfy { out[$0.key] == $0.value }, "the three fields added, nothing lost")
            if let batch {
                check(out["bootstrap_room"] == .array(fields.rooms.map { .int(Int($0)) }) && out["bootstrap_port"] == .array(Array(repeating: .int(8998), count: batch))
                      && out["bootstrap_host"] == .array(Array(repeating: .string("198.18.0.1"), count: batch)), "a list of each, as drawn")
            } else {
                check(out["bootstrap_room"] == .int(Int(fields.rooms[0])) && out["bootstrap_port"] == .int(8998), "the fields as drawn")
            }
        }
    }

    static let keyring = try! MeshKeyring(parsing: String(repeating: "5a", count: 32))
    static let sealer = Sealer(keyring: keyring, maxPacket: 1 << 20)

    static func wire(_ bytes: [UInt8]) {
        // As received off the network: open (nearly always refused), then decode what opened.
        if case .success(let plain) = sealer.open(bytes) { _ = WireCodec.decode(plain) }
        // The codec on its own, as if the bytes had opened: what decodes re-encodes to itself.
        if let envelope = WireCodec.decode(bytes) {
            check(WireCodec.decode(WireCodec.encode(envelope)) == envelope, "a decoded envelope round-trips")
            // The pure core takes it as a peer's message: a fresh node with some state of its own,
            // so joins, refutations, merges and full-state exchanges all have something to act on.
            if case .node(let message) = envelope.message {
                var node = MeshNode(name: "fuzz", address: "127.0.0.1:1", generation: 1, origin: 1, seeds: ["127.0.0.1:2"])
                var rng = SplitMix64(seed: 1)
                _ = node.write("sessions", "k", [1], wallMs: 1)
                _ = node.tick(now: 1, using: &rng)
                _ = node.receive(message, from: envelope.sender, now: 2, wallMs: 2, using: &rng)
                _ = node.tick(now: 10_000, using: &rng)
            }
            var filter = ReplayFilter()
            check(filter.accept(sender: envelope.sender, generation: envelope.generation, counter: envelope.counter), "first sight is fresh")
            check(!filter.accept(sender: envelope.sender, generation: envelope.generation, counter: envelope.counter), "second sight is a replay")
        }
        // A joining router's tree chunk, as another router streams it: decoded or refused, and
        // what decodes imports into a tree without trapping.
        if let (_, chunk) = TreeChunkCodec.decode(bytes, now: 1_000) {
            var policy = CacheAwarePolicy()
            _ = policy.apply(chunk: chunk)
        }
        // What we seal, we open.
        check((try? sealer.open(sealer.seal(bytes)).get()) == bytes, "seal then open gives the bytes back")
    }

    /// Encoded envelopes of every message kind (`smg-fuzz write-wire-seeds DIR`), and one sealed.
    static func wireSeeds() -> [[UInt8]] {
        let stamp = HLCStamp(wallMs: 5, logical: 2, node: 99)
        let vector = VersionVector([1: 5, 7: 2])
        let member = SwimNode.Member(name: "router-1", address: "127.0.0.1:39527", generation: 7, incarnation: 3, status: .suspect, origin: "router-2")
        let entries = [ReplicatedEntry(store: "workers", key: "http://w:1", value: Array(#"{"labels":{}}"#.utf8), stamp: stamp, dot: Dot(origin: 1, seq: 5)),
                       ReplicatedEntry(store: "sessions", key: "m\u{0}k", value: nil, stamp: stamp, dot: Dot(origin: 7, seq: 1), seen: vector)]
        let messages: [MeshMessage] = [
            .node(.swim(.ping(seq: 1, gossip: [member]))), .node(.swim(.ack(seq: 2, gossip: []))), .node(.swim(.pingReq(seq: 3, target: "router-3", gossip: [member]))),
            .node(.swim(.join(member))), .node(.swim(.sync([member], reply: true))), .node(.push(entries)),
            .node(.digest(ReplicationDigest(context: CausalContext(vector: vector, cloud: [Dot(origin: 4, seq: 44)]), liveCount: 3, fingerprint: 9), reply: true)),
            .node(.answer(entries, through: vector)), .node(.state(entries, context: CausalContext(vector: vector, cloud: []), reply: false)),
            .custom(topic: "tree", payload: [1, 2, 3]), .custom(topic: MeshService.helloTopic, payload: []),
            // Summarized digests (a hash; bucket hashes with one bucket's counters), push-pull by
            // buckets, and an answer and a full state with retired origins' floors.
            .node(.digest(ReplicationDigest(vector: .summary(VectorSummary(hash: 5)), liveCount: 1, fingerprint: 2), reply: true)),
            .node(.digest(ReplicationDigest(vector: .summary(VectorSummary(of: vector, exactMask: VersionVector.bit(of: 1))), liveCount: 1, fingerprint: 2), reply: false)),
            .node(.swim(.syncDigest((0..<64).map { UInt64($0) }))), .node(.swim(.syncBuckets(mask: 1 << 3, members: [member], reply: true))),
            .node(.answer(entries, through: vector, retired: VersionVector([9: 4]))),
            .node(.state(entries, context: CausalContext(vector: vector, cloud: [], retired: [9: 4]), reply: true)),
        ]
        let plain = messages.enumerated().map { WireCodec.encode(.init(sender: "127.0.0.1:39527", generation: 1, counter: UInt64($0.offset), message: $0.element)) }
        var chunk = TreeChunkCodec.Encoder(model: "m", now: 10, limit: 4096)
        _ = chunk.begin([[1, 2]])
        _ = chunk.add(depth: 1, label: [3, 4], owners: [TreeStamp(owner: "w1", lastUse: 9)])
        return plain + [sealer.seal(plain[0]), chunk.payload]
    }

    static func config(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        if let url = try? RedisURL(parsing: text), case .sentinel(_, let sentinels, _) = url.server {
            check(!sentinels.isEmpty && sentinels.count <= RedisURL.maxSentinels, "Sentinels within bounds: \(sentinels.count)")
        }
        if let url = try? PostgresURL(parsing: text) {
            check(!url.user.isEmpty && !url.database.isEmpty && (1...65535).contains(url.port), "a PostgreSQL URL within bounds: \(url.description)")
        }
        // A discovery manifest (an operator's file, maybe generated): parsed strictly, within bounds.
        if let manifest = try? DiscoveryManifest.parse(bytes) {
            check(manifest.workers.count <= DiscoveryManifest.maxWorkers, "a manifest within bounds: \(manifest.workers.count)")
            check(Set(manifest.workers.map(\.url.canonical)).count == manifest.workers.count, "no URL twice in a manifest")
            for entry in manifest.workers {
                check(WorkerFields.problem(model: entry.modelID, labels: entry.worker.labels, apiKey: nil) == nil, "a manifest entry a worker may hold")
            }
        }
        // An in-place upgrade's messages (another process's, on the takeover socket): typed, bounded,
        // and the descriptor count must match the sockets named.
        let descriptors = Int(bytes.first ?? 0) % 6
        if let offer = try? HandoverOffer.decode(bytes, descriptors: descriptors) {
            check(offer.sockets.count == descriptors && Set(offer.sockets).count == descriptors, "an offer names each descriptor once")
            check(offer.workers.count <= HandoverOffer.maxWorkers, "an offer within bounds: \(offer.workers.count)")
            let again = try? HandoverOffer.decode(offer.encoded(), descriptors: descriptors)
            check(again?.sockets == offer.sockets && again?.meshName == offer.meshName && again?.workers.map(\.url) == offer.workers.map(\.url), "an offer survives its encoding")
        }
        if let accepted = try? HandoverAcceptance.decode(bytes) {
            check(accepted.took.count <= HandoverOffer.Socket.allCases.count && accepted.pid > 0, "an acceptance within bounds")
        }
        if let pairs = try? ConfigLoader.parseConfig(text, path: "fuzz.yaml") {
            var flags = (try? ConfigLoader.resolve(arguments: [], environment: [:]))!
            for (name, value) in pairs { flags.set(name, value, from: .configFile) }
            _ = try? RouterConfig(flags)
        }
        let arguments = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        // File flags would read the fuzzer's arbitrary paths: only in-memory ones here.
        guard !arguments.contains(where: { $0.contains("file") || $0.contains("config") || $0.contains("path") }) else { return }
        _ = try? RouterConfig.load(arguments: arguments, environment: [:])
    }

    /// One router state and loop for every input: control routes need a key the fuzzer cannot
    /// guess, so the fleet stays empty (an embedded loop cannot open worker connections). A
    /// tracer that drops its spans makes every request go through `RequestTrace`, whose
    /// `traceparent` parsing reads what a client sends.
    static let loop = EmbeddedEventLoop()
    static let state: RouterState = {
        let config = try! RouterConfig.load(arguments: ["--control-plane-api-keys", "fuzz:fuzz:admin:\(UUID().uuidString)",
                                                        "--max-payload-size", "65536"], environment: [:])
        let metrics = RouterMetrics(durationBuckets: config.durationBuckets)
        let registry = WorkerRegistry(policy: config.policy, config: config.policyConfig, breaker: config.breaker, health: config.health)
        return RouterState(config: config, registry: registry, metrics: metrics,
                           logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }),
                           pools: UpstreamPools(group: loop, metrics: metrics), tls: try! TLSContexts(config.tls), tracer: NoOpTracer())
    }()

    /// The Conversations and Responses routes answer from a task that hops back to the
    /// connection's loop, which the single-threaded embedded loop cannot take: inputs that reach
    /// them are served on a thread-safe testing loop instead (`serveWithHops`).
    static let asyncRoutePrefixes = [Array("/v1/conversations".utf8), Array("/v1/responses".utf8)]

    static func http(_ bytes: [UInt8]) {
        if asyncRoutePrefixes.contains(where: { prefix in
            bytes.count >= prefix.count && (0...(bytes.count - prefix.count)).contains { bytes[$0..<($0 + prefix.count)].elementsEqual(prefix) }
        }) {
            let out = serveWithHops(bytes)
            if verbose { print(String(decoding: out, as: UTF8.self), terminator: "") }
            return
        }
        let channel = EmbeddedChannel(loop: loop)
        try! channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
        try! channel.pipeline.syncOperations.addHandler(RouterHandler(state: state, pool: state.pools.pool(for: loop)))
        try? channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        _ = try? channel.writeInbound(ByteBuffer(bytes: bytes))
        loop.run()
        while let out = try? channel.readOutbound(as: ByteBuffer.self) {
            if verbose { print(String(buffer: out), terminator: "") }
        }
        _ = try? channel.finish()
        loop.run()
        check(state.inFlight == 0, "every request began is ended once the connection is gone (\(state.inFlight) left)")
        check(state.admission.inFlight == 0, "every admission slot is released")
    }
}
#endif
