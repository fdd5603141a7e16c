extension Dictionary {
    /// Rebuilds the table at its current size once it is three-quarters empty (and
    /// larger than a few pages), so that memory follows the entries after a burst; a
    /// Swift dictionary otherwise keeps the capacity of its largest size. O(count) when
    /// it rebuilds, which happens at most once per halving of the entries twice over, so
    /// the cost is amortized against the removals that made the table sparse.
    /// - Returns: whether it rebuilt the table.
    @discardableResult
    mutating func shrinkIfSparse() -> Bool {
        guard capacity > 256, count * 4 < capacity else { return false }
        var smaller = Dictionary(minimumCapacity: count)
        for (key, value) in self { smaller[key] = value }
        self = smaller
        return true
    }
}
