// Targets for what reaches a router from outside the inference path: tokens, stored history,
// workers' answers, Redis replies, and the mesh above its codec. Like the others, they need
// `@testable` access, so only debug and fuzzing builds compile them.
#if DEBUG || FUZZING
import Dispatch
import Foundation
import JWTKit
import Logging
@testable import Mesh
import NIOCore
import NIOEmbedded
import NIOHTTP1
@testable import Node
import Reliability
import Synchronization

extension FuzzTarget {
    /// Runs async code to its end from the synchronous fuzz entry.
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
        let result = Mutex<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let r = await body()
            result.withLock { $0 = r }
            done.signal()
        }
        done.wait()
        return result.withLock { $0! }
    }

    // MARK: jwt

    static let jwtAuthority: JWTAuthority = {
        let settings = SecuritySettings.JWT(issuer: "https://idp.example", audience: "smg", jwksURI: "https://idp.example/keys",
                                            roleClaim: "realm_access.roles", roleMapping: ["Ops": .admin])
        return try! JWTAuthority(settings, fetch: { _ in [] })
    }()

    /// A token's header (read before any signature check), its claims as the checks read them,
    /// and a JWKS document as the key cache decodes it.
    static func jwt(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        _ = JWTAuthority.looksLikeJWT(Substring(text))
        _ = JWTAuthority.header(text)
        if let claims = JSONValue.parse(bytes)?.object {
            switch jwtAuthority.check(claims, now: Date(timeIntervalSince1970: 1_700_000_000)) {
            case .success(let p): check(p.method == .jwt && claims["iss"]?.string == "https://idp.example", "only a matching issuer passes")
            case .failure(let e): check(e.status.code == 401 || e.status.code == 403, "a refusal is 401 or 403")
            }
        }
        _ = try? JSONDecoder().decode(TokenClaims.self, from: Data(bytes))
        _ = try? JSONDecoder().decode(JWKS.self, from: Data(bytes))
    }

    // MARK: routes that hop off the loop

    /// A router over `historyStore` on a thread-safe testing loop, where a task may hand its
    /// answer back (`OffLoop`): tenants from a trusted header, a small item bound, no workers.
    static let hopLoop = NIOAsyncTestingEventLoop()
    static let hopState: RouterState = {
        let config = try! RouterConfig.load(arguments: ["--control-plane-api-keys", "fuzz:fuzz:admin:\(UUID().uuidString)", "--trust-tenant-header",
                                                        "--max-payload-size", "65536", "--history-max-item-bytes", "4096"], environment: [:])
        let metrics = RouterMetrics(durationBuckets: config.durationBuckets)
        let registry = WorkerRegistry(policy: config.policy, config: config.policyConfig, breaker: config.breaker, health: config.health)
        return RouterState(config: config, registry: registry, metrics: metrics,
                           logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }),
                           pools: UpstreamPools(group: hopLoop, metrics: metrics), tls: try! TLSContexts(config.tls), history: historyStore)
    }()

    /// Raw bytes into the HTTP decoder and the handler on a testing channel, waiting for every
    /// hop off the loop to come back (one that never does is a hang: a finding), then the
    /// connection closed. Returns what the router wrote.
    static func serveWithHops(_ bytes: [UInt8]) -> [UInt8] {
        blocking {
            let channel = NIOAsyncTestingChannel(loop: hopLoop)
            // The handler takes its loop's pool, which only that loop may touch.
            try! await hopLoop.submit {
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                try channel.pipeline.syncOperations.addHandler(RouterHandler(state: hopState, pool: hopState.pools.pool(for: hopLoop)))
            }.get()
            try? await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1))
            _ = try? await channel.writeInbound(ByteBuffer(bytes: bytes))
            await settle()
            var out: [UInt8] = []
            while let b = try? await channel.readOutbound(as: ByteBuffer.self) { out += b.readableBytesView }
            _ = try? await channel.finish()
            await settle()
            check(hopState.inFlight == 0, "every request began is ended once the connection is gone (\(hopState.inFlight) left)")
            check(hopState.admission.inFlight == 0, "every admission slot is released")
            return out
        }
    }

    /// Runs the loop until no hop is out (10 s at most: the memory store answers at once).
    static func settle() async {
        let deadline = ContinuousClock.now + .seconds(10)
        repeat {
            await hopLoop.run()
            guard OffLoop.pending.load(ordering: .acquiring) > 0 else { break }
            check(ContinuousClock.now < deadline, "an answer handed off the loop never came back")
            await Task.yield()
        } while true
        await hopLoop.run()
    }

    // MARK: history

    static let historyStore = MemoryHistoryStore(limits: .init(responses: 64, items: 256, conversations: 32, bytes: 1 << 20, retentionMs: 0))
    static let knownIDs = Mutex<(conversations: [String], responses: [String])>(([], []))

    /// The Conversations and Responses routes over a memory store that persists across inputs
    /// (bounded small, so eviction runs too). The first byte picks the method and the tenant;
    /// then a path (where `{c}` and `{r}` stand for ids stored by earlier inputs, also in the
    /// body), a NUL, a body. With bit 0x20 the request goes over HTTP (`historyOverHTTP`).
    static func history(_ bytes: [UInt8]) {
        guard let op = bytes.first else { return }
        let rest = bytes.dropFirst()
        let cut = rest.firstIndex(of: 0) ?? rest.endIndex
        let known = knownIDs.withLock { $0 }
        let path = String(decoding: rest[..<cut], as: UTF8.self)
            .replacingOccurrences(of: "{c}", with: known.conversations.last ?? "conv_none")
            .replacingOccurrences(of: "{r}", with: known.responses.last ?? "resp_none")
        let rawBody = cut < rest.endIndex ? Array(rest[(cut + 1)...]) : []
        let body = !rawBody.contains(UInt8(ascii: "{")) ? ByteBuffer(bytes: rawBody)
            : ByteBuffer(string: String(decoding: rawBody, as: UTF8.self)
                .replacingOccurrences(of: "{c}", with: known.conversations.last ?? "conv_none")
                .replacingOccurrences(of: "{r}", with: known.responses.last ?? "resp_none"))
        let method: HTTPMethod = [.GET, .POST, .DELETE][Int(op % 3)]
        let tenant: String? = op & 0x80 != 0 ? "t1" : (op & 0x40 != 0 ? "t2" : nil)
        if op & 0x20 != 0 { return historyOverHTTP(method: method, path: path, body: body, tenant: tenant) }
        let store = historyStore
        let answer: Result<ControlResponse, APIError>? = blocking {
            let target = RequestTarget(path)
            if path == "/v1/responses", method == .POST { return await responsesTurn(body, tenant: tenant, store: store) }
            if let p = ConversationRoutes.resolve(target.path), target.path.hasPrefix("/v1/conversations") {
                return await ConversationRoutes.answer(p, method: method, target: target, body: body, store: store, tenant: tenant)
            }
            if let p = ResponsesRoutes.resolve(target.path), target.path.hasPrefix("/v1/responses") {
                return await ResponsesRoutes.answer(p, method: method, target: target, store: store, tenant: tenant)
            }
            return nil
        }
        if case .success(let r)? = answer {
            check(JSONValue.parse(Array(r.body.utf8)) != nil, "an answer is JSON: \(r.body.prefix(200))")
            if let id = JSONValue.parse(Array(r.body.utf8))?["id"]?.string {
                knownIDs.withLock { k in
                    if id.hasPrefix("conv_") { k.conversations = Array((k.conversations + [id]).suffix(8)) }
                    if id.hasPrefix("resp_") { k.responses = Array((k.responses + [id]).suffix(8)) }
                }
            }
        } else if case .failure(let e)? = answer {
            check((400..<600).contains(Int(e.status.code)), "an error is 4xx or 5xx")
        }
        let counts = historyStore.counts
        check(counts.responses <= 64 && counts.items <= 256 && counts.conversations <= 32 && counts.bytes <= 1 << 20, "the store within its bounds: \(counts)")
    }

    /// The same request as a client sends it, through the HTTP decoder, the handler and the hop
    /// back to the loop (a Responses turn then finds no worker, after its history is loaded). A
    /// well-formed request gets one whole answer, JSON when it has a body.
    static func historyOverHTTP(method: HTTPMethod, path: String, body: ByteBuffer, tenant: String?) {
        let clean = !path.isEmpty && path.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
        var head = "\(method.rawValue) \(clean ? path : "/v1/conversations") HTTP/1.1\r\nhost: fuzz\r\ncontent-type: application/json\r\n"
        if let tenant { head += "x-smg-tenant-id: \(tenant)\r\n" }
        head += "content-length: \(body.readableBytes)\r\nconnection: close\r\n\r\n"
        let out = serveWithHops(Array(head.utf8) + Array(body.readableBytesView))
        let text = String(decoding: out, as: UTF8.self)
        if verbose { print(text.prefix(400)) }
        check(text.hasPrefix("HTTP/1.1 "), "a well-formed request is answered: \(text.prefix(200))")
        guard let split = text.range(of: "\r\n\r\n") else { return check(false, "an answer has a whole head") }
        let status = Int(text.dropFirst(9).prefix(3)) ?? 0
        check((200..<600).contains(status), "a status: \(text.prefix(40))")
        let answerBody = Array(text[split.upperBound...].utf8)
        if !answerBody.isEmpty, let parsed = JSONValue.parse(answerBody) {
            if status == 200, let id = parsed["id"]?.string {
                knownIDs.withLock { k in
                    if id.hasPrefix("conv_") { k.conversations = Array((k.conversations + [id]).suffix(8)) }
                    if id.hasPrefix("resp_") { k.responses = Array((k.responses + [id]).suffix(8)) }
                }
            }
        } else if !answerBody.isEmpty {
            // Pages that are not JSON by design (the dashboard's HTML, /metrics' text) say so in
            // their content-type; a body that claims JSON, or claims nothing, must be JSON.
            let head = text[..<split.lowerBound].lowercased()
            let declared = head.split(separator: "\r\n").first { $0.hasPrefix("content-type:") }
            check(declared.map { !$0.contains("json") } ?? false, "an answer body is JSON: \(text.prefix(300))")
        }
        let counts = historyStore.counts
        check(counts.responses <= 64 && counts.items <= 256 && counts.conversations <= 32 && counts.bytes <= 1 << 20, "the store within its bounds: \(counts)")
    }

    /// A Responses turn without a worker: parse, load its history as the gateway does, translate
    /// it to a chat body, and store it as if the worker had answered.
    static func responsesTurn(_ body: ByteBuffer, tenant: String?, store: MemoryHistoryStore) async -> Result<ControlResponse, APIError> {
        do {
            let request = try ResponsesRequest.parse(body.readableBytesView, now: Date())
            let history = try await ResponsesGateway.history(for: request, tenant: tenant, store: store)
            check(history.count <= ResponsesGateway.maxHistoryItems, "history within its count")
            let chat = ResponsesTranslation.chatBody(request, messages: ResponsesTranslation.messages(instructions: request.instructions, items: history + request.input))
            check(JSONValue.parse(Array(chat.render().utf8)) != nil, "the chat body is JSON")
            let id = HistoryIDs.make("resp")
            let raw: JSONValue = ["id": .string(id), "object": "response", "output": []]
            try await store.saveResponse(StoredResponse(id: id, previousResponseID: request.previousResponseID, conversationID: request.conversationID,
                                                        input: request.input, createdAt: Date(), raw: raw, tenant: tenant),
                                         appendingTo: request.conversationID, items: request.input)
            return .success(ControlResponse(json: raw))
        } catch {
            return .failure(.history(error))
        }
    }

    // MARK: worker

    static let streamRequest = try! ResponsesRequest.parse(Array(#"{"input":"x","stream":true}"#.utf8), now: Date(timeIntervalSince1970: 1))

    /// What a worker answers, as the router reads it: a chat completion stream translated into
    /// Responses events (cut anywhere), a whole completion, PD's logprob merge, `/v1/models` and
    /// `/get_server_info`.
    static func worker(_ bytes: [UInt8]) {
        let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
        var stream = ResponsesStream(responseID: "resp_f", createdAt: Date(timeIntervalSince1970: 1), request: streamRequest)
        var events = stream.start() + stream.feed(bytes[..<cut]) + stream.feed(bytes[cut...]) + stream.finish()
        if stream.failure == nil {
            events += stream.finishItems()
            events += stream.completed(ResponsesTranslation.response(id: "resp_f", createdAt: Date(timeIntervalSince1970: 1), request: streamRequest, result: stream.result))
        } else {
            events += stream.failed(stream.failure!)
        }
        for line in events.split(separator: "\n") where line.hasPrefix("data: ") {
            check(JSONValue.parse(Array(line.dropFirst(6).utf8)) != nil, "every event's data is JSON: \(line.prefix(200))")
        }
        var once = SSEFramer(maxEventBytes: 1 << 20), inTwo = SSEFramer(maxEventBytes: 1 << 20)
        let framed = once.feed(bytes) + [once.finish()].compactMap { $0 }
        let framedInTwo = inTwo.feed(bytes[..<cut]) + inTwo.feed(bytes[cut...]) + [inTwo.finish()].compactMap { $0 }
        check(framed == framedInTwo, "events do not depend on where reads end")
        check(framed.flatMap(\.bytes) == bytes, "events hold every byte, in order")
        let whole = JSONValue.parse(bytes)
        if let whole { _ = ResponsesTranslation.result(ofCompletion: whole) }
        let lists = PDLogprobs.inputLogprobs(fromPrefillAnswer: bytes)
        for streamed in [false, true] {
            var merge = PDLogprobs(stream: streamed)
            var out: [UInt8] = []
            out += merge.decodePart(ByteBuffer(bytes: bytes[..<cut])) ?? []
            out += merge.prefillAnswered(lists.isEmpty ? [[.int(1)]] : lists)
            out += merge.decodePart(ByteBuffer(bytes: bytes[cut...])) ?? []
            out += merge.decodeEnded()
            if !streamed, whole != nil { check(JSONValue.parse(out) != nil, "a merged JSON answer is JSON") }
        }
        switch ModelDiscovery.modelID(fromModels: ByteBuffer(bytes: bytes)) {
        case .success(let id)?: check(WorkerFields.problem(model: id, labels: nil, apiKey: nil) == nil, "a model id taken passes the admin checks")
        default: break
        }
        if case .success(let ranks)? = ModelDiscovery.dpSize(fromServerInfo: ByteBuffer(bytes: bytes)) {
            check((1...Worker.maxDPSize).contains(ranks), "ranks within bounds: \(ranks)")
        }
        if let load = LoadMonitor.engineLoad(fromLoads: ByteBuffer(bytes: bytes)) {
            check((1...LoadMonitor.maxRanks).contains(load.ranks.count), "a load report within bounds: \(load.ranks.count) ranks")
            check(load.ranks.allSatisfy { (0...LoadMonitor.maxCount).contains($0.waiting) && (0...LoadMonitor.maxCount).contains($0.running) },
                  "counts within bounds")
            check(load.waiting >= 0 && load.running >= 0, "sums that cannot overflow")
            check(load.tokenUsage.map { (0...1).contains($0) } ?? true, "KV usage within 0...1")
            _ = OverloadThresholds().isOverloaded(load)
        }
    }

    // MARK: kube

    static let kubeSelector = try! KubeSelector(["app=w"], flag: "--selector")

    /// A Kubernetes API server's answers: the watch body cut in two anywhere gives the same
    /// events; each event applied to a pod cache keeps it true to the selector, and its changes
    /// say exactly how the cache moved; a pod list replaces the cache the same way.
    static func kube(_ bytes: [UInt8]) {
        let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
        var whole = WatchLines(maxLine: 4096), inTwo = WatchLines(maxLine: 4096)
        let once = (try? whole.feed(bytes)).map { $0 + [whole.finish()].compactMap { $0 } }
        let twice = (try? inTwo.feed(bytes[..<cut])).flatMap { first in (try? inTwo.feed(bytes[cut...])).map { first + $0 + [inTwo.finish()].compactMap { $0 } } }
        check(once == twice || once == nil, "watch lines do not depend on where reads end")
        var cache = PodCache(selector: kubeSelector)
        func follow(_ changes: [PodCache.Change], from before: [String: KubePod]) {
            var moved = before
            for c in changes {
                check(c.old == before[(c.old ?? c.new)!.key], "a change's old pod is the one the cache held")
                moved[(c.new ?? c.old)!.key] = c.new
            }
            check(moved == cache.pods, "the changes say exactly how the cache moved")
            check(cache.pods.values.allSatisfy { kubeSelector.matches($0.labels) }, "the cache holds only pods the selector matches")
        }
        for line in once ?? [] {
            guard let event = try? KubeWatchEvent.parse(line) else { continue }
            let before = cache.pods
            switch cache.apply(event) {
            case .changes(let changes): follow(changes, from: before)
            case .relist: check(cache.resourceVersion == nil, "an expired watch lists again")
            case .failed: check(cache.pods == before, "a failed watch changes no pod")
            }
        }
        if let list = try? KubePodList.parse(bytes) {
            let before = cache.pods
            follow(cache.listed(list.items, resourceVersion: list.resourceVersion), from: before)
            check(cache.resourceVersion == list.resourceVersion, "a list sets the version to watch from")
        }
    }

    // MARK: redis

    /// Redis replies through hiredis' reader, fed in two pieces, and each reply read as what a
    /// Sentinel or a master may say (a master's address, a `+switch-master`, a ROLE, a refusal).
    static func redis(_ bytes: [UInt8]) {
        let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
        let reader = RESP.Reader()
        reader.feed(ByteBuffer(bytes: bytes[..<cut]))
        var replies = 0
        do throws(RedisError) {
            while let reply = try reader.next() { replies += 1; readAsSentinelOrMaster(reply) }
            reader.feed(ByteBuffer(bytes: bytes[cut...]))
            while replies < 100_000, let reply = try reader.next() { replies += 1; readAsSentinelOrMaster(reply) }
        } catch {
            return
        }
    }

    static let sentinel = RedisSentinel(master: "mymaster", sentinels: [.init(host: "127.0.0.1", port: 1)], password: nil, group: loop,
                                        timeout: .seconds(1), logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }), moved: { _ in })

    private static func readAsSentinelOrMaster(_ reply: RedisValue) {
        for address in [RedisSentinel.address(reply), sentinel.switchedMaster(reply)].compactMap({ $0 }) {
            check((1...65535).contains(address.port) && !address.host.isEmpty && address.host.utf8.count <= 255, "a master's address within bounds: \(address)")
        }
        let role = RedisClient.role(reply)
        check(role.replicas >= 0 && (role.replicas == 0 || role.name == "master"), "only a master has replicas")
        if let refusal = RedisClient.masterGone(reply) { check(refusal.count <= 120, "a refusal is logged bounded") }
    }

    // MARK: mesh

    /// A router state of its own: what peers' writes add to it is removed after each input.
    static let meshState: RouterState = {
        let config = try! RouterConfig.load(arguments: [], environment: [:])
        let metrics = RouterMetrics(durationBuckets: config.durationBuckets)
        let registry = WorkerRegistry(policy: config.policy, config: config.policyConfig, breaker: config.breaker, health: config.health)
        return RouterState(config: config, registry: registry, metrics: metrics, logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }),
                           pools: UpstreamPools(group: loop, metrics: metrics), tls: try! TLSContexts(config.tls))
    }()

    static let meshService = MeshService(config: .init(name: "fuzz", bindHost: "127.0.0.1", port: 1, advertise: "127.0.0.1:1", peers: [], keyring: keyring),
                                         generation: 1, logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }), clock: { 1_000 })

    /// The mesh above its codec: a replicated worker entry applied to the registry (key and
    /// value split at the first NUL), a demand message, and frames read off an inbound
    /// connection (lengths, limits, the untrusted state, sealing).
    static func mesh(_ bytes: [UInt8]) {
        let cut = bytes.firstIndex(of: 0) ?? bytes.count
        let key = String(decoding: bytes[..<cut], as: UTF8.self)
        let value: [UInt8]? = cut < bytes.count ? Array(bytes[(cut + 1)...]) : nil
        MeshBridge.apply(key: key, value: value, from: "fuzz-peer", state: meshState)
        for w in meshState.registry.all {
            check(WorkerFields.problem(model: w.modelID, labels: w.labels, apiKey: w.apiKey) == nil, "a worker from a peer passes the admin checks")
            _ = meshState.registry.remove(id: w.id)
        }
        if let demand = MeshBridge.demand(from: bytes) { check(demand.isFinite && demand >= 0, "a demand is a finite rate") }
        // A peer's load report: bounded, and what the book makes of it stays within the bounds.
        if let report = LoadReport.decode(bytes) {
            check(report.entries.count <= LoadReport.maxEntries, "a load report within bounds")
            let again = LoadReport.decode(report.encoded(maxBytes: .max))?.entries.sorted { $0.worker < $1.worker }
            check(again == report.entries.sorted { $0.worker < $1.worker }, "a load report survives its encoding")
            var book = FleetLoadBook()
            book.heard(from: "fuzz-peer", report, nowMs: 1)
            for (_, load) in book.totals(nowMs: 1) {
                check(load.inFlight >= 0 && load.inFlight <= LoadReport.maxCount && load.ranks.count <= LoadReport.maxRanks, "a peer's load within bounds")
            }
        }
        let channel = EmbeddedChannel(loop: loop)
        try! channel.pipeline.syncOperations.addHandler(MeshFrameReader(service: meshService, deadline: .seconds(30), helloDeadline: .seconds(5)))
        _ = try? channel.writeInbound(ByteBuffer(bytes: bytes))
        _ = try? channel.finish()
        loop.run()
    }
}
#endif
