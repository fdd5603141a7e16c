/// A min-heap of (deadline, id) pairs: what expires next, in O(log n) per insert and
/// per removal. The in-memory store keeps one per shard for its lease records, so that
/// expiring them is a little work on each call instead of an O(n) sweep that stalls a
/// shard under sustained load.
///
/// A value type; not thread-safe on its own (the shard's lock guards it).
struct ExpiryQueue {
    struct Entry {
        var deadline: UInt64
        var id: UInt64
    }

    private var heap: [Entry] = []

    var count: Int { heap.count }

    /// Frees the heap's spare capacity once it is three-quarters empty (after a burst).
    /// Returns whether it did.
    @discardableResult
    mutating func shrinkIfSparse() -> Bool { heap.shrinkIfSparse() }

    mutating func insert(deadline: UInt64, id: UInt64) {
        heap.append(Entry(deadline: deadline, id: id))
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].deadline < heap[parent].deadline else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes and returns the entry with the earliest deadline if it is at or before `now`.
    mutating func popExpired(at now: UInt64) -> Entry? {
        guard let first = heap.first, first.deadline <= now else { return nil }
        let last = heap.removeLast()
        guard !heap.isEmpty else { return first }
        heap[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            guard left < heap.count else { break }
            let right = left + 1
            let smaller = right < heap.count && heap[right].deadline < heap[left].deadline ? right : left
            guard heap[smaller].deadline < heap[parent].deadline else { break }
            heap.swapAt(parent, smaller)
            parent = smaller
        }
        return first
    }
}
