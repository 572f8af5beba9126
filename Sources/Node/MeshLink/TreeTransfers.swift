#if canImport(Glibc)
import Glibc
#endif
import Logging
import Mesh
import NIOCore
import Policies

/// Sends every cache-aware tree to a router that just became alive (joined, restarted, back
/// from a partition), so it routes conversations it has never seen to the workers holding them
/// from its first request.
///
/// A warm router's trees are hundreds of megabytes of prompt. They go as a stream of chunks
/// (`RadixTree.exportChunk`, each built under the policy's lock for one chunk's time and encoded
/// by `TreeChunkCodec`) over the mesh's TCP connection to the joiner, at most `window` chunks
/// written and not yet taken by the kernel: the joiner's pace sets the sender's, and the sender
/// never holds more than a few chunks, however big the tree. Shared prefixes travel once. When
/// the last transfer ends, freed memory is handed back to the system.
final class TreeTransfers: Sendable {
    static let topic = "tree.full"
    /// Chunks in flight per joiner (each at most `WireCodec.maxPayload` bytes).
    static let window = 4
    /// The longest path shipped, in blocks (a chunk must hold one with its ancestors): about
    /// 100 KB of prompt at 16-byte blocks. Longer prompts stay out of joiners' trees.
    static let maxPathLength = (WireCodec.maxPayload - 8192) / 8

    private let registry: WorkerRegistry
    private let mesh: MeshService
    private let loop: any EventLoop
    private let logger: Logger
    private let clock: @Sendable () -> UInt64
    /// Transfers under way by joiner address; touched only on `loop`.
    private let running: NIOLoopBoundBox<[String: Transfer]>

    /// One joiner's transfer: which model's tree, where in it, what is in flight.
    private final class Transfer {
        let id: UInt64
        let models: [String]
        var model = 0
        var cursor = TreeExportCursor<UInt64>()
        var inFlight = 0
        var chunks = 0
        var bytes = 0
        var failure: (any Error)?
        let startedMs: UInt64
        var exhausted: Bool { model >= models.count }
        init(id: UInt64, models: [String], startedMs: UInt64) {
            self.id = id
            self.models = models
            self.startedMs = startedMs
        }
    }

    init(registry: WorkerRegistry, mesh: MeshService, loop: any EventLoop, logger: Logger, clock: @escaping @Sendable () -> UInt64) {
        self.registry = registry
        self.mesh = mesh
        self.loop = loop
        self.logger = logger
        self.clock = clock
        self.running = .makeBoxSendingValue([:], eventLoop: loop)
    }

    /// Starts sending every tree to `address`; a transfer still running to it is dropped (the
    /// router restarted: it needs everything again).
    func start(to address: String) {
        loop.execute { [self] in
            let id = (running.value[address]?.id ?? 0) + 1
            running.value[address] = Transfer(id: id, models: registry.policyModels.sorted(), startedMs: clock())
            pump(address, id)
        }
    }

    /// Imports a chunk another router sent; false when it does not decode.
    func receive(_ payload: [UInt8]) -> Bool {
        guard let (model, chunk) = TreeChunkCodec.decode(payload, now: clock()) else { return false }
        return registry.applyPolicyChunk(model: model, chunk)
    }

    /// Sends chunks while the window has room; ends the transfer when all are written.
    private func pump(_ address: String, _ id: UInt64) {
        guard let t = running.value[address], t.id == id else { return }
        while t.failure == nil, t.inFlight < Self.window, let payload = nextChunk(t) {
            t.inFlight += 1
            t.chunks += 1
            t.bytes += payload.count
            // The promise belongs to `loop`, so this runs there.
            mesh.stream(topic: Self.topic, payload: payload, to: address, on: loop).whenComplete { [self] result in
                guard let t = running.value[address], t.id == id else { return }
                t.inFlight -= 1
                if case .failure(let error) = result, t.failure == nil { t.failure = error }
                pump(address, id)
            }
        }
        guard t.inFlight == 0, t.exhausted || t.failure != nil else { return }
        running.value[address] = nil
        let metadata: Logger.Metadata = ["peer": "\(address)", "chunks": "\(t.chunks)", "bytes": "\(t.bytes)", "ms": "\(clock() - t.startedMs)"]
        if let failure = t.failure {
            logger.warning("cache-aware tree transfer to a joining router stopped", metadata: metadata.merging(["error": "\(failure)"]) { a, _ in a })
        } else {
            // An empty tree (a fresh cluster, or another policy's) is nothing worth a line.
            logger.log(level: t.chunks > 0 ? .info : .debug, "cache-aware trees sent to a joining router", metadata: metadata)
        }
        if running.value.isEmpty { Self.returnFreedMemory() }
    }

    /// The next chunk's payload, moving on to the next model when one is done; nil at the end.
    private func nextChunk(_ t: Transfer) -> [UInt8]? {
        while !t.exhausted {
            var encoder = TreeChunkCodec.Encoder(model: t.models[t.model], now: clock())
            let accepted = registry.exportPolicyChunk(
                model: t.models[t.model], after: &t.cursor, maxPathLength: Self.maxPathLength,
                begin: { encoder.begin($0) }, accept: { encoder.add(depth: $0, label: $1, owners: $2) })
            if accepted == nil || accepted == 0 || t.cursor.isFinished {
                t.model += 1
                t.cursor = TreeExportCursor()
            }
            if let accepted, accepted > 0 { return encoder.payload }
        }
        return nil
    }

    /// glibc keeps freed heap for reuse; after a big transfer that is tens of megabytes the
    /// router would otherwise hold for good.
    private static func returnFreedMemory() {
        #if canImport(Glibc)
        // malloc.h is not part of the Glibc module; the symbol is looked up instead.
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return }
        _ = unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)(0)
        #endif
    }
}
