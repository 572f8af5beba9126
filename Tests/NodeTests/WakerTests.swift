import Foundation
@testable import Node
import Synchronization
import Testing

/// A closure kept in a `Mutex` as a bare optional closure type is re-abstracted by every
/// `withLock` and written back wrapped in more thunks: each read lengthens a chain every later
/// call walks (quadratic time, unbounded memory). Health checks and discovery wake their tasks
/// all the time, so this was a leak that grew with uptime.
@Suite struct WakerTests {
    @Test func wakingIsAsCheapTheThirtyThousandthTime() {
        let waker = PeriodicTask.Waker()
        let woken = Atomic<Int>(0)
        waker.install { woken.add(1, ordering: .relaxed) }
        let start = ContinuousClock.now
        for _ in 0..<30_000 { waker.wake() }
        let took = ContinuousClock.now - start
        #expect(woken.load(ordering: .relaxed) == 30_000)
        // A chain made it about 6 s on this 2-core machine; straight calls take milliseconds.
        #expect(took < .seconds(1), "30,000 wakes took \(took)")
    }

    /// No bare closure is kept in a Mutex anywhere in the sources (wrap it in a struct).
    @Test func noBareClosureIsKeptInAMutex() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let sources = root.appendingPathComponent("Sources")
        let files = FileManager.default.enumerator(atPath: sources.path)?.compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") } ?? []
        #expect(files.count > 50)
        let bare = #/Mutex<\(*(@Sendable\s*)?\([^<>]*\)\s*(throws\s*)?->[^>]*\)?\??>|Mutex<[A-Za-z]*(Handler|Callback|Action)\?>/#
        var found: [String] = []
        for file in files {
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            for line in text.split(separator: "\n") where line.contains(bare) && !line.contains("ChangeAction?") && !line.contains("Mutex<Action?>") {
                found.append("\(file): \(line.trimmingCharacters(in: .whitespaces))")
            }
        }
        #expect(found.isEmpty, "a bare closure in a Mutex: \(found)")
    }
}
