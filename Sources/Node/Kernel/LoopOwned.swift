import NIOCore
#if DEBUG || FUZZING
import Synchronization
#endif

/// State that belongs to one event loop (its upstream pool, its client deadlines): it may be
/// handed between threads but is only touched on its own loop. NIOLoopBound would demand being
/// on that loop already when the router creates these at start-up, for every loop.
struct LoopOwned<Value: AnyObject>: @unchecked Sendable {
    private let owned: Value
    let eventLoop: any EventLoop

    init(_ value: Value, on loop: any EventLoop) {
        owned = value
        eventLoop = loop
    }

    var value: Value {
        eventLoop.preconditionInEventLoop()
        return owned
    }
}

/// Async work the router cannot do on an event loop (verifying a token against a JWKS, a
/// storage round trip), run in a task whose result is handed back on the loop that asked: the
/// handler that receives it is only ever touched on its own loop.
enum OffLoop {
    static func run<T: Sendable>(on loop: any EventLoop, _ work: @escaping @Sendable () async -> T, then deliver: @escaping (T) -> Void) {
        let deliver = NIOLoopBound(deliver, eventLoop: loop)
        #if DEBUG || FUZZING
        pending.add(1, ordering: .relaxed)
        #endif
        Task {
            let result = await work()
            loop.execute {
                deliver.value(result)
                #if DEBUG || FUZZING
                pending.subtract(1, ordering: .releasing)
                #endif
            }
        }
    }

    #if DEBUG || FUZZING
    /// Hops begun and not yet handed back: the in-process fuzzer waits for them, so an answer
    /// that never comes back is a finding (a hang), not a skipped input.
    static let pending = Atomic<Int>(0)
    #endif
}
