import NIOCore
import ServiceLifecycle

/// Background work that repeats on one event loop (health checks, load polling, tree eviction,
/// rate-limit shares, model discovery), as a service: it starts when the router's service group
/// runs and, on graceful shutdown, its timer is cancelled and the cancellation awaited, so no
/// tick runs once the group has returned.
struct PeriodicTask: Service {
    let name: String
    let loop: any EventLoop
    let initialDelay: TimeAmount
    let interval: TimeAmount
    let tick: @Sendable () -> Void

    init(_ name: String, on loop: any EventLoop, initialDelay: TimeAmount = .zero, every interval: TimeAmount, _ tick: @escaping @Sendable () -> Void) {
        self.name = name
        self.loop = loop
        self.initialDelay = initialDelay
        self.interval = interval
        self.tick = tick
    }

    func run() async throws {
        let tick = self.tick
        let task = loop.scheduleRepeatedTask(initialDelay: initialDelay, delay: interval) { _ in tick() }
        // Returns on graceful shutdown, throws when the group is cancelled: stop the timer either way.
        try? await gracefulShutdown()
        let stopped = loop.makePromise(of: Void.self)
        task.cancel(promise: stopped)
        try? await stopped.futureResult.get()
    }
}

extension PeriodicTask: CustomStringConvertible {
    var description: String { name }
}
