import SimWorker
import Testing

/// The simulated worker's prefix cache is the yardstick of cache-aware routing: its numbers
/// must mean what a real paged KV cache's would.
@Suite struct PrefixCacheTests {
    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    @Test func repeatedPromptIsCachedInWholeBlocks() {
        var c = PrefixCache(capacityBlocks: 100, blockSize: 4)
        #expect(c.lookupAndInsert(bytes("abcdefghij")) == 0)
        #expect(c.lookupAndInsert(bytes("abcdefghij")) == 8, "two full blocks; the partial tail is never cached")
    }

    @Test func onlyTheSharedPrefixCounts() {
        var c = PrefixCache(capacityBlocks: 100, blockSize: 4)
        _ = c.lookupAndInsert(bytes("aaaabbbbcccc"))
        #expect(c.lookupAndInsert(bytes("aaaabbbbXXXX")) == 8)
        #expect(c.lookupAndInsert(bytes("XXXXbbbbcccc")) == 0, "a block is keyed by everything before it")
    }

    @Test func leastRecentlyUsedBlocksAreEvicted() {
        var c = PrefixCache(capacityBlocks: 10, blockSize: 1)
        _ = c.lookupAndInsert(bytes("abcde"))   // 5 blocks, used at t1
        _ = c.lookupAndInsert(bytes("vwxyz"))   // 5 more, t2
        _ = c.lookupAndInsert(bytes("abcde"))   // refresh the first prompt, t3
        _ = c.lookupAndInsert(bytes("k"))       // 11 blocks: evict down to 9, oldest first
        #expect(c.count <= 10)
        #expect(c.lookupAndInsert(bytes("abcde")) == 5, "recently used prompt survives")
        #expect(c.lookupAndInsert(bytes("vwxyz")) < 5, "the least recently used prompt lost blocks")
    }

    @Test func zeroCapacityCachesNothing() {
        var c = PrefixCache(capacityBlocks: 0, blockSize: 4)
        _ = c.lookupAndInsert(bytes("abcdabcd"))
        #expect(c.lookupAndInsert(bytes("abcdabcd")) == 0)
    }

    @Test func flushEmptiesTheCache() {
        var c = PrefixCache(capacityBlocks: 10, blockSize: 2)
        _ = c.lookupAndInsert(bytes("abcd"))
        c.flush()
        #expect(c.lookupAndInsert(bytes("abcd")) == 0)
    }

    @Test func optionsParseAndRefuseBadValues() throws {
        let o = try SimWorkerOptions.parse(["--port", "0", "--tokens-per-second", "5", "--failure-rate", "0.05", "--name", "w"])
        #expect(o.tokensPerSecond == 5 && o.failureRate == 0.05 && o.workerName == "w")
        #expect(throws: SimWorkerOptionError.self) { try SimWorkerOptions.parse(["--failure-rate", "2"]) }
        #expect(throws: SimWorkerOptionError.self) { try SimWorkerOptions.parse(["--port"]) }
        #expect(throws: SimWorkerOptionError.self) { try SimWorkerOptions.parse(["--bogus"]) }
        #expect(throws: SimWorkerOptionError.self) { try SimWorkerOptions.parse(["--cache-block-size", "0"]) }
        let engine = try SimWorkerOptions.parse(["--max-running", "4", "--reported-waiting", "3", "--reported-token-usage", "0.5"])
        #expect(engine.maxRunning == 4 && engine.reportedWaiting == 3 && engine.reportedTokenUsage == 0.5)
        #expect(throws: SimWorkerOptionError.self) { try SimWorkerOptions.parse(["--reported-token-usage", "1.5"]) }
        #expect(throws: SimWorkerOptionError.self) { try SimWorkerOptions.parse(["--max-running", "-1"]) }
    }
}
