/// The simulated worker's KV cache: prompts are cut into fixed-size blocks of characters, each
/// block identified by the hash of everything up to and including it (as a radix/paged KV cache
/// would reuse it), kept in LRU order up to a capacity. A request's cached tokens are the
/// characters of its longest cached block prefix.
public struct PrefixCache: Sendable {
    public let capacity: Int
    public let blockSize: Int
    private var lastUse: [UInt64: UInt64] = [:]
    private var clock: UInt64 = 0

    public init(capacityBlocks: Int, blockSize: Int) {
        self.capacity = capacityBlocks
        self.blockSize = max(1, blockSize)
    }

    public var count: Int { lastUse.count }

    /// Looks the prompt up, then stores all its full blocks. Returns the cached prefix length.
    public mutating func lookupAndInsert(_ prompt: [UInt8]) -> Int {
        guard capacity > 0 else { return 0 }
        clock &+= 1
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        var cached = 0
        var stillMatching = true
        var offset = 0
        while offset + blockSize <= prompt.count {
            for i in offset..<(offset + blockSize) {
                hash = (hash ^ UInt64(prompt[i])) &* 0x100_0000_01b3
            }
            if stillMatching, lastUse[hash] != nil {
                cached += blockSize
            } else {
                stillMatching = false
            }
            lastUse[hash] = clock
            offset += blockSize
        }
        if lastUse.count > capacity { evict() }
        return cached
    }

    public mutating func flush() { lastUse.removeAll(keepingCapacity: true) }

    /// Drops least recently used blocks down to 90% of capacity, so eviction is amortised.
    private mutating func evict() {
        let target = capacity * 9 / 10
        let ordered = lastUse.sorted { $0.value < $1.value }
        for (key, _) in ordered.prefix(lastUse.count - target) { lastUse.removeValue(forKey: key) }
    }
}
