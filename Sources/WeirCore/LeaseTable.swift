/// The lease records of one `InMemoryStore` shard, by counter: counters are issued in
/// order, and their records kept in pages of 128 slots.
///
/// **Why pages.** Under sustained load a shard holds every lease issued within the
/// lease TTL (a minute at 40,000 calls/s is 2.4 million). A dictionary holding them
/// doubles and rehashes all its records now and then, and since keys spread evenly
/// over the shards, every shard does so at about the same count: a burst of copying
/// that showed as the p99 of `bench/serve.sh`. Here the table grows one page at a time,
/// a record never moves once written, and a page leaves as soon as every counter in it
/// has been issued and none is still held (leases mostly end in the order they start,
/// so pages empty from the oldest).
///
/// A slot is empty (not issued yet, issued without a record, or forgotten), active (the
/// record of a lease not yet settled) or settled (a tombstone kept until the lease's
/// TTL, so that a second settlement is told apart from an expired one).
///
/// Counters are 40 bits and wrap (after 2^40 leases in one shard): the store's lease
/// TTL is far shorter than a wrap, so a wrapped counter never meets a live record.
///
/// A value type; not thread-safe on its own (the shard's lock guards it). Every
/// operation is O(1), apart from allocating or freeing one page (about 25 KB) per 128 counters.
struct LeaseTable<Record> {
    enum Slot {
        case empty
        case active(Record)
        case settled
    }

    private struct Page {
        var slots: [Slot]
        /// Slots that are active or settled.
        var held = 0

        init() {
            slots = Array(repeating: .empty, count: LeaseTable.pageSize)
        }
    }

    static var pageSize: Int { 1 << pageBits }
    private static var pageBits: UInt64 { 7 }
    private static var counterMask: UInt64 { (1 << 40) - 1 }

    private var pages: [UInt64: Page] = [:]
    /// The next counter `reserve()` gives out.
    private(set) var nextCounter: UInt64 = 0
    /// Records active (issued, neither settled nor forgotten).
    private(set) var activeCount = 0
    /// Tombstones of settled leases not yet forgotten.
    private(set) var settledCount = 0

    /// Takes the next counter, for a lease that may or may not get a record.
    mutating func reserve() -> UInt64 {
        let counter = nextCounter
        nextCounter = (nextCounter + 1) & Self.counterMask
        if counter & UInt64(Self.pageSize - 1) == 0 {
            // A new page of counters begins: the previous one is complete, and leaves if
            // nothing in it is held (its counters went to calls without a record).
            let previous = ((counter &- 1) & Self.counterMask) >> Self.pageBits
            if pages[previous]?.held == 0 { pages.removeValue(forKey: previous) }
        }
        return counter
    }

    /// Whether `counter` was given out by `reserve()` (since the last wrap).
    func wasIssued(_ counter: UInt64) -> Bool { counter < nextCounter }

    /// Stores the record of the lease `counter` (reserved, and not stored before).
    mutating func insert(_ record: Record, at counter: UInt64) {
        let (page, slot) = Self.locate(counter)
        pages[page, default: Page()].slots[slot] = .active(record)
        pages[page]!.held += 1
        activeCount += 1
    }

    /// The slot of `counter`.
    subscript(counter: UInt64) -> Slot {
        let (page, slot) = Self.locate(counter)
        return pages[page]?.slots[slot] ?? .empty
    }

    /// Turns the active record of `counter` into a tombstone and returns it; nil (and
    /// no change) when the slot is not active.
    @discardableResult
    mutating func settle(_ counter: UInt64) -> Record? {
        let (page, slot) = Self.locate(counter)
        guard case .active(let record)? = pages[page]?.slots[slot] else { return nil }
        pages[page]!.slots[slot] = .settled
        activeCount -= 1
        settledCount += 1
        return record
    }

    /// Empties the slot of `counter` and returns what it held. Frees the page when it
    /// holds nothing more and all its counters have been issued.
    @discardableResult
    mutating func forget(_ counter: UInt64) -> Slot {
        let (page, slot) = Self.locate(counter)
        guard let previous = pages[page]?.slots[slot] else { return .empty }
        switch previous {
        case .empty: return .empty
        case .active: activeCount -= 1
        case .settled: settledCount -= 1
        }
        pages[page]!.slots[slot] = .empty
        pages[page]!.held -= 1
        let complete = nextCounter >> Self.pageBits != page
        if complete && pages[page]!.held == 0 { pages.removeValue(forKey: page) }
        return previous
    }

    /// Pages allocated (for tests: memory follows the leases held).
    var pageCount: Int { pages.count }

    private static func locate(_ counter: UInt64) -> (page: UInt64, slot: Int) {
        (counter >> pageBits, Int(counter & UInt64(pageSize - 1)))
    }
}
