/// A binary min-heap (the standard library has none): the radix tree's eviction order, and the
/// mesh simulator's deliveries in time order.
public struct MinHeap<Element: Comparable> {
    public private(set) var items: [Element] = []

    public var isEmpty: Bool { items.isEmpty }
    /// The smallest element, without removing it.
    public var first: Element? { items.first }

    public init(_ items: [Element] = []) {
        self.items = items
        var i = items.count / 2 - 1
        while i >= 0 { siftDown(i); i -= 1 }
    }

    public mutating func push(_ e: Element) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard items[i] < items[p] else { break }
            items.swapAt(i, p)
            i = p
        }
    }

    public mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        if !items.isEmpty { siftDown(0) }
        return top
    }

    private mutating func siftDown(_ start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count, items[l] < items[m] { m = l }
            if r < items.count, items[r] < items[m] { m = r }
            if m == i { return }
            items.swapAt(i, m)
            i = m
        }
    }
}
