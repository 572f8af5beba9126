import Logging
@testable import Node
import NIOCore
import NIOPosix
import ServiceLifecycle
import SimWorker
import Synchronization
import Testing
import TestSupport

@Suite(.serialized) struct ServiceLifecycleTests {
    /// A periodic task on a loop that outlives the group: once the group has returned, its
    /// tick never runs again.
    @Test func periodicTaskStopsWithItsGroup() async throws {
        // The process-wide loops outlive the group, so a timer left on them could still fire.
        let loops = MultiThreadedEventLoopGroup.singleton
        let ticks = Atomic<Int>(0)
        let task = PeriodicTask("counter", on: loops.next(), every: .milliseconds(10)) { ticks.add(1, ordering: .relaxed) }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [task], logger: Logger(label: "test")))
        let running = Task { try await group.run() }
        try await eventually(timeout: .seconds(10), "three ticks") { ticks.load(ordering: .relaxed) >= 3 }
        await group.triggerGracefulShutdown()
        try await running.value
        let atReturn = ticks.load(ordering: .relaxed)
        // Twenty periods: a timer left running would tick about twenty times more.
        try await Task.sleep(for: .milliseconds(200))
        #expect(ticks.load(ordering: .relaxed) == atReturn)
    }

    /// A whole router in this process over a simulated worker: after `run` returns, no health
    /// check (or any other request) reaches the worker any more.
    @Test func noRouterTimerRunsAfterShutdown() async throws {
        // The process-wide loops outlive the group, so a timer left on them could still fire.
        let loops = MultiThreadedEventLoopGroup.singleton
        var options = SimWorkerOptions()
        options.host = "127.0.0.1"
        options.port = 0
        let worker = try await SimWorkerServer.start(options, group: loops)
        let healthInterval = 1
        let config = try RouterConfig.load(arguments: [
            "--worker-urls", worker.url, "--host", "127.0.0.1", "--port", "0", "--prometheus-host", "127.0.0.1", "--prometheus-port", "0",
            "--health-check-interval-secs", "\(healthInterval)", "--worker-startup-check-interval", "1", "--policy", "power_of_two",
            "--shutdown-grace-period-secs", "1",
        ], environment: [:])
        let node = try await RouterNode.start(config: config, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), threads: 1)
        let running = Task { try await node.run() }
        // Two checks: the first (start-up) and one on the regular interval.
        try await eventually(timeout: .seconds(Double(healthInterval) * 2 + 8), "two health checks") { worker.stats.healthChecks >= 2 }
        await node.shutdown()
        try await running.value
        let atReturn = worker.stats
        // Three health intervals: a checker left running would have checked again.
        try await Task.sleep(for: .seconds(healthInterval * 3))
        let after = worker.stats
        #expect(after.healthChecks == atReturn.healthChecks, "health checks after shutdown: \(after.healthChecks - atReturn.healthChecks)")
        #expect(after.requests == atReturn.requests)
        await worker.close()
    }
    /// Writes waiting for storage when the router stops are not dropped silently: intake
    /// closes, each waiting write is tried once more at once (not after its delay), and what
    /// still fails is lost, counted by its owner.
    @Test func backgroundWritesTryOnceMoreAtShutdownAndCountWhatIsLost() async throws {
        let writes = BackgroundWrites()
        let storageUp = Atomic<Bool>(false)
        let tries = Atomic<Int>(0), lost = Atomic<Int>(0)
        let group = ServiceGroup(configuration: .init(services: [writes], logger: Logger(label: "test")))
        let running = Task { try await group.run() }
        for k in 0..<5 {
            let job = BackgroundWrites.Job(kind: "test", bytes: 10, delays: [.seconds(600)], attempt: {
                tries.add(1, ordering: .relaxed)
                return k < 3 && storageUp.load(ordering: .relaxed)
            }, lost: { lost.add(1, ordering: .relaxed) })
            #expect(writes.submit(job))
        }
        try await eventually(timeout: .seconds(5), "five writes waiting") { writes.count == 5 }
        #expect(tries.load(ordering: .relaxed) == 0, "each waits for its first delay")
        storageUp.store(true, ordering: .relaxed)
        let stopping = ContinuousClock.now
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(ContinuousClock.now - stopping < .seconds(5), "the waits were cut short")
        #expect(tries.load(ordering: .relaxed) == 5 && lost.load(ordering: .relaxed) == 2 && writes.count == 0)
        #expect(!writes.submit(.init(kind: "test", bytes: 1, delays: [], attempt: { true }, lost: {})), "intake is closed")
    }
}
