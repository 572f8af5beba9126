import Logging
import ServiceLifecycle
import Synchronization

/// Writes the router owes a store but does not make a client wait for: a Responses turn whose
/// history write found storage down (tried again for about 30 s), and sticky-session writes to
/// Redis (`--session-store redis`). One service owns them all, so none is an unstructured task
/// that graceful shutdown forgets:
///
/// - bounded by count and by bytes: past either, `submit` refuses and the caller counts the
///   write as failed at once, so a long outage cannot pile up memory, however large the answers;
/// - each write is tried after each of its delays until it succeeds or they run out;
/// - on graceful shutdown (after the API server has drained, so the last requests' writes are
///   in), intake closes, every write still waiting is tried once more at once, and what fails
///   then is lost: counted by its owner and logged, one line per kind.
final class BackgroundWrites: Service, Sendable {
    struct Job: Sendable {
        /// What it writes ("history", "session"): the shutdown log counts lost writes by kind.
        let kind: String
        let bytes: Int
        /// How long to wait before each try; empty: one try at once.
        let delays: [Duration]
        /// One try; true when the write is done.
        let attempt: @Sendable () async -> Bool
        /// The write is given up (its delays ran out, or the router stopped).
        let lost: @Sendable () -> Void
    }

    let maxJobs: Int
    let maxBytes: Int
    private let books = Mutex<(open: Bool, count: Int, bytes: Int, lostAtShutdown: [String: Int])>((true, 0, 0, [:]))
    private let jobs: AsyncStream<Job>
    private let intake: AsyncStream<Job>.Continuation
    private let logger: Logger

    init(maxJobs: Int = 10_000, maxBytes: Int = 64 << 20, logger: Logger = Logger(label: "smg.writes")) {
        self.maxJobs = maxJobs
        self.maxBytes = maxBytes
        self.logger = logger
        (jobs, intake) = AsyncStream<Job>.makeStream()
    }

    /// Queues a write; false when a bound is full or the router is stopping (the caller then
    /// treats the write as failed).
    func submit(_ job: Job) -> Bool {
        let taken = books.withLock { b in
            guard b.open, b.count < maxJobs, b.bytes + job.bytes <= maxBytes else { return false }
            b.count += 1
            b.bytes += job.bytes
            return true
        }
        guard taken else { return false }
        if case .terminated = intake.yield(job) {
            release(job)
            return false
        }
        return true
    }

    var count: Int { books.withLock { $0.count } }
    var bytes: Int { books.withLock { $0.bytes } }

    func run() async throws {
        await withDiscardingTaskGroup { group in
            await withGracefulShutdownHandler {
                for await job in jobs {
                    group.addTask { await self.perform(job) }
                }
            } onGracefulShutdown: {
                self.books.withLock { $0.open = false }
                self.intake.finish()
            }
            // Intake is closed: the writes still waiting stop waiting and try once more.
            group.cancelAll()
        }
        for (kind, count) in books.withLock({ $0.lostAtShutdown }).sorted(by: { $0.key < $1.key }) {
            logger.warning("background writes lost at shutdown", metadata: ["kind": "\(kind)", "count": "\(count)"])
        }
    }

    private func perform(_ job: Job) async {
        defer { release(job) }
        for delay in job.delays.isEmpty ? [.zero] : job.delays {
            if delay > .zero, !Task.isCancelled { try? await Task.sleep(for: delay) }
            if await job.attempt() { return }
            if Task.isCancelled { break }
        }
        job.lost()
        if Task.isCancelled { books.withLock { $0.lostAtShutdown[job.kind, default: 0] += 1 } }
    }

    private func release(_ job: Job) {
        books.withLock { b in
            b.count -= 1
            b.bytes -= job.bytes
        }
    }
}

extension BackgroundWrites: CustomStringConvertible {
    var description: String { "background writes" }
}
