import NIOCore
import ServiceLifecycle
import Synchronization

/// Background work that repeats on one event loop (health checks, load polling, tree eviction,
/// rate-limit shares, model discovery), as a service: it starts when the router's service group
/// runs and, on graceful shutdown, its timer is cancelled and the cancellation awaited, so no
/// tick runs once the group has returned.
///
/// A task whose work comes and goes (health checks due at different times, model discovery
/// with nothing pending) says after each tick how long it may sleep (`until:`): an idle router's
/// CPU is its wake-ups, and five wake-ups a second that find nothing to do were a third of it.
struct PeriodicTask: Service {
    let name: String
    let loop: any EventLoop
    let initialDelay: TimeAmount
    /// After each tick: how long until the next.
    let tick: @Sendable () -> TimeAmount
    /// Runs the next tick now instead of when it is due: work that arrives (a worker added, a
    /// check finished) wakes the task, so it need not poll for it while idle.
    let waker: Waker

    /// Pulls a task's next tick forward from anywhere; does nothing before the task runs or
    /// after it stopped.
    ///
    /// The action is kept in a struct, not as a bare optional closure: a `Mutex` holding a
    /// closure type re-abstracts it on every `withLock` and writes it back wrapped in two more
    /// thunks, so each wake lengthened a chain every later wake walks (found under discovery
    /// churn: every worker added and every health check wakes a task; 30,000 wakes cost 6 s).
    final class Waker: Sendable {
        private struct Action: Sendable { let run: @Sendable () -> Void }
        private let action = Mutex<Action?>(nil)
        func wake() { action.withLock { $0 }?.run() }
        /// The running task installs its action (nil once it stopped).
        func install(_ a: (@Sendable () -> Void)?) { action.withLock { $0 = a.map(Action.init) } }
    }

    init(_ name: String, on loop: any EventLoop, initialDelay: TimeAmount = .zero, every interval: TimeAmount, _ tick: @escaping @Sendable () -> Void) {
        self.init(name, on: loop, initialDelay: initialDelay) {
            tick()
            return interval
        }
    }

    /// A tick that returns how long until the next one.
    init(_ name: String, on loop: any EventLoop, initialDelay: TimeAmount = .zero, waker: Waker = Waker(),
         until tick: @escaping @Sendable () -> TimeAmount) {
        self.name = name
        self.loop = loop
        self.initialDelay = initialDelay
        self.waker = waker
        self.tick = tick
    }

    func run() async throws {
        // The scheduled tick; once stopped, a tick running then schedules nothing.
        let timer = Mutex<(next: Scheduled<Void>?, stopped: Bool)>((nil, false))
        let (loop, tick) = (self.loop, self.tick)
        @Sendable func schedule(in delay: TimeAmount) {
            timer.withLock { t in
                guard !t.stopped else { return }
                t.next = loop.scheduleTask(in: delay) { schedule(in: tick()) }
            }
        }
        schedule(in: initialDelay)
        waker.install {
            loop.execute {
                guard timer.withLock({ t in defer { t.next?.cancel() }; return !t.stopped }) else { return }
                schedule(in: .zero)
            }
        }
        // Returns on graceful shutdown, throws when the group is cancelled: stop the timer either
        // way, on its loop, after any tick running there.
        try? await gracefulShutdown()
        waker.install(nil)
        try? await loop.submit { timer.withLock { t in t.stopped = true; t.next?.cancel() } }.get()
    }
}

extension PeriodicTask: CustomStringConvertible {
    var description: String { name }
}
