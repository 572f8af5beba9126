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
