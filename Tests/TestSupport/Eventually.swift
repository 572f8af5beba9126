/// A test's failure with the reason it gives.
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes, then fails naming what
/// it waited for. Tests wait this way, never with a fixed sleep: `timeout` is derived from the
/// timers under test with a margin for a noisy 2-core machine.
public func eventually(timeout: Duration, _ what: String, _ condition: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? condition()) == true { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    if try condition() { return }
    throw TestFailure("timed out after \(timeout) waiting for: \(what)")
}

/// `eventually` for a condition that awaits (a command to a server, a request in this process).
public func eventually(timeout: Duration, _ what: String, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? await condition()) == true { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    if try await condition() { return }
    throw TestFailure("timed out after \(timeout) waiting for: \(what)")
}
