import NIOCore

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
        Task {
            let result = await work()
            loop.execute { deliver.value(result) }
        }
    }
}
