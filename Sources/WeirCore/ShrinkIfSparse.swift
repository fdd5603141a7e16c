/// When a table that grew in a burst is worth rebuilding at its current size: once it is
/// three-quarters empty and larger than `floor` slots. A Swift dictionary or array keeps
/// the capacity of its largest size when entries leave; the store's sweep uses this to
/// give that memory back. A rebuild is O(count) and happens at most once per halving of
/// the entries twice over, so its cost is amortized against the removals that made the
/// table sparse.
@inline(__always)
func isSparse(count: Int, capacity: Int, floor: Int) -> Bool {
    capacity > floor && count * 4 < capacity
}

extension Dictionary {
    /// Rebuilds the table at its current size when `isSparse` (floor 256 slots).
    ///
    /// - Returns: whether it rebuilt the table.
    @discardableResult
    mutating func shrinkIfSparse() -> Bool {
        guard isSparse(count: count, capacity: capacity, floor: 256) else { return false }
        var smaller = Dictionary(minimumCapacity: count)
        for (key, value) in self { smaller[key] = value }
        self = smaller
        return true
    }
}

extension Array {
    /// Copies the elements to storage of their own size when `isSparse` (floor 64).
    ///
    /// - Returns: whether it did.
    @discardableResult
    mutating func shrinkIfSparse() -> Bool {
        guard isSparse(count: count, capacity: capacity, floor: 64) else { return false }
        var smaller: [Element] = []
        smaller.reserveCapacity(count)
        smaller.append(contentsOf: self)
        self = smaller
        return true
    }
}
