import Primitives
import Foundation
import MallocInterposerSwift
import Policies

// smg-policy-bench: micro-benchmarks of the routing policies on a multi-turn workload —
// cache-aware decisions (hash + match + insert), tree match, eviction and summary export at
// 10^4, 10^5 and 10^6 prompts, with allocations (malloc-interposer) and memory per prompt byte.
// A program that prints numbers: run it on a release build with nothing else running.

// Allocation counting needs the interposer preloaded; re-run ourselves with it when it is not.
let env = ProcessInfo.processInfo.environment
if env["LD_PRELOAD"]?.contains("MallocInterposer") != true {
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    let lib = exe.deletingLastPathComponent().appendingPathComponent("libMallocInterposerSwift.so")
    if FileManager.default.fileExists(atPath: lib.path) {
        var e = env
        e["LD_PRELOAD"] = lib.path
        let p = Process()
        p.executableURL = exe
        p.arguments = Array(CommandLine.arguments.dropFirst())
        p.environment = e
        try p.run()
        p.waitUntilExit()
        exit(p.terminationStatus)
    }
    print("note: \(lib.path) not found; allocation counts will read 0")
}
MallocInterposerSwift.initialize()

/// Multi-turn conversations: 16 shared system prompts (~1.2 KB), 8 turns per session, each turn
/// adding ~300 bytes of user text and ~100 of assistant text; prompts average ~3 KB by turn 8.
struct Workload {
    static let vocabulary = ["router", "cache", "prefix", "worker", "token", "latency", "gateway", "model", "request",
                             "session", "stream", "policy", "balance", "radix", "tree", "memory", "decode", "prefill"]
    let systems: [[UInt8]] = (0..<16).map { i in
        Array(("System prompt \(i): " + String(repeating: "You are a careful assistant for team \(i); answer precisely. ", count: 20)).utf8)
    }

    func words(_ n: Int, _ rng: inout SplitMix64) -> [UInt8] {
        var out: [UInt8] = []
        for _ in 0..<n { out += Array(Self.vocabulary.randomElement(using: &rng)!.utf8); out.append(0x20) }
        return out
    }

    /// Calls `body` with every prompt of `count`, sessions interleaved 64 at a time.
    func forEachPrompt(count: Int, seed: UInt64 = 1, _ body: (_ prompt: [UInt8], _ session: Int) -> Void) {
        var rng = SplitMix64(seed: seed)
        var produced = 0
        var block = 0
        while produced < count {
            var histories = (0..<64).map { systems[(block * 64 + $0) % systems.count] }
            for turn in 0..<8 {
                for s in 0..<64 where produced < count {
                    histories[s] += Array("User turn \(turn): ".utf8) + words(40, &rng)
                    body(histories[s], block * 64 + s)
                    produced += 1
                    histories[s] += Array("Assistant: ".utf8) + words(14, &rng)
                }
            }
            block += 1
        }
    }
}

func measure(_ body: () -> Void) -> (seconds: Double, mallocs: Int, bytes: Int) {
    MallocInterposerSwift.hook()
    let before = MallocInterposerSwift.getStatistics()
    let start = ContinuousClock.now
    body()
    let elapsed = ContinuousClock.now - start
    let after = MallocInterposerSwift.getStatistics()
    MallocInterposerSwift.unhook()
    let s = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return (s, after.mallocCount - before.mallocCount, after.mallocBytesCount - before.mallocBytesCount)
}

func fmt(_ x: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", x) }

let sizes = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let counts = sizes.isEmpty ? [10_000, 100_000, 1_000_000] : sizes
let workload = Workload()
let workers = (0..<8).map { WorkerCandidate(id: "worker-\($0)", url: "http://w\($0)") }
print("smg-policy-bench: cache_aware over 8 workers, block size 16, multi-turn prompts (avg ~2.6 KB), release build")
print("")

for n in counts {
    // A tree bound large enough that nothing is evicted while filling (eviction is measured apart).
    var config = CacheAwareConfig()
    config.maxTreeSize = Int.max / 4
    config.recordsSummaries = true  // as with the mesh on: the export path is measured too
    var policy = CacheAwarePolicy(config)
    var rng = SplitMix64(seed: 7)
    var promptBytes = 0
    var decisions = 0
    var hits = 0
    var longest = 0
    // Prompts are generated outside the timed region: collect them per batch.
    var batch: [[UInt8]] = []
    batch.reserveCapacity(4096)
    var total = (seconds: 0.0, mallocs: 0, bytes: 0)
    var now: UInt64 = 0
    func flush() {
        let m = measure {
            for p in batch {
                now += 1
                let s = policy.select(RoutingRequest(routingText: p, now: now), from: workers, using: &rng)!
                if s.reason == .cacheHit { hits += 1 }
            }
        }
        total.seconds += m.seconds
        total.mallocs += m.mallocs
        total.bytes += m.bytes
        decisions += batch.count
        batch.removeAll(keepingCapacity: true)
    }
    workload.forEachPrompt(count: n) { prompt, _ in
        promptBytes += prompt.count
        longest = max(longest, prompt.count)
        batch.append(prompt)
        if batch.count == 4096 { flush() }
    }
    flush()
    let tree = policy.tree
    let storedBytes = tree.size * config.blockSize
    print("== \(n) prompts (\(fmt(Double(promptBytes) / Double(n) / 1024, 1)) KiB average, longest \(longest) B; \(fmt(Double(promptBytes) / 1e6, 0)) MB in all)")
    print("decision (hash + match + insert): \(fmt(total.seconds / Double(decisions) * 1e6)) µs, \(fmt(Double(total.mallocs) / Double(decisions), 1)) allocations, \(fmt(Double(total.bytes) / Double(decisions), 0)) bytes allocated per decision; cache hits \(fmt(Double(hits) / Double(decisions) * 100, 1))%")
    print("tree: \(tree.nodeCount) nodes, \(tree.size) blocks = \(fmt(Double(storedBytes) / 1e6, 1)) MB of distinct prompt bytes; \(fmt(Double(tree.approximateBytes) / 1e6, 1)) MB of tree = \(fmt(Double(tree.approximateBytes) / Double(storedBytes), 3)) bytes per stored prompt byte (\(fmt(Double(tree.approximateBytes) / Double(promptBytes), 4)) per routed byte)")

    // Match alone (hashing included), on the workload's own prompts plus one new turn.
    var probes: [[UInt8]] = []
    workload.forEachPrompt(count: min(n, 20_000), seed: 1) { prompt, _ in probes.append(prompt + Array("next question".utf8)) }
    var matched = 0
    let m = measure { for p in probes { matched &+= policy.cachedPrefix(of: p).bytes } }
    print("match: \(fmt(m.seconds / Double(probes.count) * 1e6)) µs, \(fmt(Double(m.mallocs) / Double(probes.count), 1)) allocations per match (\(probes.count) probes, \(fmt(Double(matched) / Double(probes.count), 0)) B matched on average)")

    // Export: the last 1,000 decisions as a delta, then the whole tree.
    let delta = measure { _ = tree.changes(since: tree.version - 1000) }
    let d = tree.changes(since: tree.version - 1000)
    print("export last 1000 decisions: \(fmt(delta.seconds * 1e3)) ms, \(d.updates.count) chains, \(d.elementCount * 8 / 1024) KiB of block hashes")
    let full = measure { _ = tree.changes(since: 0) }
    let f = tree.changes(since: 0)
    print("export since 0 (\(f.isFull ? "whole tree" : "log")): \(fmt(full.seconds * 1e3)) ms, \(f.updates.count) chains, \(fmt(Double(f.elementCount * 8) / 1e6, 1)) MB")
    var copy = CacheAwarePolicy(config)
    let imp = measure { copy.apply(policy.summary(since: 0)) }
    print("import that summary into an empty router: \(fmt(imp.seconds * 1e3)) ms")

    // Eviction of every worker down to half of what it holds.
    copy = CacheAwarePolicy(config)
    let half = (tree.ownerSizes.max() ?? 0) / 2 * config.blockSize
    let e = measure { policy.evict(toBytesPerWorker: half) }
    print("evict every worker to half (\(half / 1024) KiB each): \(fmt(e.seconds * 1e3)) ms; tree now \(policy.tree.size) blocks, \(policy.tree.nodeCount) nodes")
    print("")
}

// The issue's bar: a cache-aware decision on a prompt of a few thousand characters, with a
// tree that already holds 10^5 prompts.
var config = CacheAwareConfig()
var policy = CacheAwarePolicy(config)
var rng = SplitMix64(seed: 3)
var t: UInt64 = 0
workload.forEachPrompt(count: 100_000) { p, _ in t += 1; _ = policy.select(RoutingRequest(routingText: p, now: t), from: workers, using: &rng) }
var long: [[UInt8]] = []
workload.forEachPrompt(count: 20_000, seed: 99) { p, _ in if p.count >= 3000 { long.append(p) } }
let r = measure { for p in long { t += 1; _ = policy.select(RoutingRequest(routingText: p, now: t), from: workers, using: &rng) } }
let avg = Double(long.reduce(0) { $0 + $1.count }) / Double(long.count)
print("decision on \(long.count) prompts of ≥ 3000 B (avg \(fmt(avg, 0)) B) with 10^5 prompts in the tree: \(fmt(r.seconds / Double(long.count) * 1e6)) µs each")
