/// The exact sliding-window log, cost-weighted: a time-ordered log of admitted
/// costs and their running sum.
///
/// An admission at time t counts in every window that contains t and stops
/// counting at exactly `t + window`. A cost is admitted at `now` when the costs
/// still counting plus the new cost are at most the limit.
///
/// **Guarantee.** In ANY window of length `window` the admitted cost never
/// exceeds the limit (charges made at settlement can exceed it; they are debts
/// that delay later calls). Memory is one entry per distinct admission instant
/// still in the window.
///
/// **Retry.** A denied cost fits at exactly the moment enough of the oldest
/// entries have left the window, not one nanosecond earlier.
///
/// **Clock jumps.** Time never runs backwards inside a log: an admission at a
/// `now` earlier than the newest entry is judged and recorded at the newest
/// entry's time, so a backwards jump can delay admissions but never add any.
///
/// A value type with copy-on-write storage; not thread-safe on its own (the
/// store's lock guards it).
public struct SlidingWindowLog: Sendable {
    @usableFromInline
    struct Entry: Sendable {
        @usableFromInline var time: UInt64
        @usableFromInline var cost: UInt64

        @inlinable
        init(time: UInt64, cost: UInt64) {
            self.time = time
            self.cost = cost
        }
    }

    /// A ring buffer: `count` entries starting at `head`.
    @usableFromInline var entries: ContiguousArray<Entry> = []
    @usableFromInline var head = 0
    @usableFromInline var count = 0
    /// Sum of the costs of all entries in the log.
    @usableFromInline var total: UInt64 = 0

    public init() {}

    /// Whether the log holds no entries.
    @inlinable
    public var isEmpty: Bool { count == 0 }

    /// The cost counting at the last time the log was pruned.
    @inlinable
    public var used: UInt64 { total }

    @inlinable
    func entry(_ offset: Int) -> Entry {
        var index = head + offset
        if index >= entries.count { index -= entries.count }
        return entries[index]
    }

    /// The time admissions at `now` are judged at: `now`, or the newest entry's
    /// time if the clock has gone backwards.
    @inlinable
    public func effectiveTime(_ now: UInt64) -> UInt64 {
        count == 0 ? now : max(now, entry(count - 1).time)
    }

    /// Drops entries that no longer count at `now` (those with `time + window <= now`).
    @inlinable
    public mutating func prune(now: UInt64, window: UInt64) {
        while count > 0 {
            let oldest = entries[head]
            guard oldest.time.addingSaturating(window) <= now else { break }
            // Saturating: extra charges at settlement can saturate the total (a limit
            // near 2^64), and then the entries sum to more than it.
            total = total.subtractingSaturating(oldest.cost)
            head += 1
            if head == entries.count { head = 0 }
            count -= 1
        }
        if count == 0 { head = 0 }
    }

    /// Nanoseconds after `now` at which `cost` fits under `limit`, assuming the log
    /// was pruned at `now` and nothing else is admitted. 0 when it fits now.
    ///
    /// - Precondition: `cost <= limit`.
    @inlinable
    public func wait(cost: UInt64, limit: UInt64, window: UInt64, now: UInt64) -> UInt64 {
        guard total.addingSaturating(cost) > limit else { return 0 }
        var counting = total
        var offset = 0
        while offset < count {
            let oldest = entry(offset)
            counting = counting.subtractingSaturating(oldest.cost)
            if counting.addingSaturating(cost) <= limit {
                return oldest.time.addingSaturating(window).subtractingSaturating(now)
            }
            offset += 1
        }
        preconditionFailure("a cost within the limit always fits once the log is empty")
    }

    /// Records `cost` admitted at `time` (which must not precede the newest entry).
    @inlinable
    public mutating func append(cost: UInt64, at time: UInt64) {
        guard cost > 0 else { return }
        total = total.addingSaturating(cost)
        if count > 0 {
            var last = head + count - 1
            if last >= entries.count { last -= entries.count }
            if entries[last].time == time {
                entries[last].cost = entries[last].cost.addingSaturating(cost)
                return
            }
        }
        if count == entries.count { grow() }
        var slot = head + count
        if slot >= entries.count { slot -= entries.count }
        entries[slot] = Entry(time: time, cost: cost)
        count += 1
    }

    /// Takes back up to `cost` from the entry admitted at `time`, if it still counts.
    /// Returns the cost actually taken back.
    @inlinable
    @discardableResult
    public mutating func refund(cost: UInt64, admittedAt time: UInt64) -> UInt64 {
        // Entries are time-ordered: binary search.
        var low = 0
        var high = count
        while low < high {
            let middle = (low + high) / 2
            if entry(middle).time < time { low = middle + 1 } else { high = middle }
        }
        guard low < count else { return 0 }
        var index = head + low
        if index >= entries.count { index -= entries.count }
        guard entries[index].time == time else { return 0 }
        let taken = min(cost, entries[index].cost)
        entries[index].cost -= taken
        total = total.subtractingSaturating(taken)
        return taken
    }

    /// Nanoseconds from `now` until every entry has left the window.
    @inlinable
    public func reset(window: UInt64, now: UInt64) -> UInt64 {
        count == 0 ? 0 : entry(count - 1).time.addingSaturating(window).subtractingSaturating(now)
    }

    @usableFromInline
    mutating func grow() {
        var grown = ContiguousArray<Entry>()
        grown.reserveCapacity(Swift.max(4, entries.count * 2))
        for offset in 0..<count { grown.append(entry(offset)) }
        let capacity = Swift.max(4, entries.count * 2)
        while grown.count < capacity { grown.append(Entry(time: 0, cost: 0)) }
        entries = grown
        head = 0
    }
}
