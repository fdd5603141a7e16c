/// The lease records of one `InMemoryStore` shard, by counter: counters are issued in
/// order and looked up in pages of 128 four-byte slots; the records themselves sit in a
/// pool of 128-record pages, reused through a free list.
///
/// **Why pages.** Under sustained load a shard holds every lease issued within the
/// lease TTL (a minute at 40,000 calls/s is 2.4 million in all). A dictionary holding
/// them doubles and rehashes all its records now and then, and since keys spread evenly
/// over the shards, every shard does so at about the same count: a burst of copying
/// that showed in the p99 of `bench/serve.sh`. Here both tables grow one page at a
/// time and a record never moves once written.
///
/// **Memory.** A counter page leaves as soon as every counter in it has been issued
/// and none is still held (leases mostly end in the order they start, so pages empty
/// from the oldest). A settled lease keeps only its 4-byte slot (a tombstone until its
/// TTL, so that a second settlement is told apart from an expired one); its record goes
/// back to the pool at once. The pool keeps the most records ever active at once.
///
/// Counters are 40 bits and wrap (after 2^40 leases in one shard): the store's lease
/// TTL is far shorter than a wrap, so a wrapped counter never meets a live record.
///
/// A value type; not thread-safe on its own (the shard's lock guards it). Every
/// operation is O(1), apart from allocating or freeing a page now and then.
struct LeaseTable<Record> {
    enum Slot {
        case empty
        case active(Record)
        case settled
    }

    /// Slot codes in a counter page: 0 empty, 1 settled, n >= 2 the record at n - 2.
    private struct CounterPage {
        var codes = [UInt32](repeating: 0, count: LeaseTable.pageSize)
        /// Codes that are not empty.
        var held = 0
    }

    static var pageSize: Int { 1 << pageBits }
    private static var pageBits: UInt64 { 7 }
    private static var counterMask: UInt64 { (1 << 40) - 1 }
    private static var settledCode: UInt32 { 1 }

    private var counterPages: [UInt64: CounterPage] = [:]
    /// The pool: record `i` is `recordPages[i / pageSize][i % pageSize]`.
    private var recordPages: [[Record?]] = []
    /// Pool indices free for reuse.
    private var freeRecords: [UInt32] = []
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
            if counterPages[previous]?.held == 0 { counterPages.removeValue(forKey: previous) }
        }
        return counter
    }

    /// Whether `counter` was given out by `reserve()` (since the last wrap).
    func wasIssued(_ counter: UInt64) -> Bool { counter < nextCounter }

    /// Stores the record of the lease `counter` (reserved, and not stored before).
    mutating func insert(_ record: Record, at counter: UInt64) {
        let index: Int
        if let free = freeRecords.popLast() {
            index = Int(free)
            recordPages[index >> Int(Self.pageBits)][index & (Self.pageSize - 1)] = record
        } else {
            // No hole in the pool: it holds exactly the active records, 0..<activeCount.
            index = activeCount
            if index & (Self.pageSize - 1) == 0 {
                var page = [Record?](repeating: nil, count: Self.pageSize)
                page[0] = record
                recordPages.append(page)
            } else {
                recordPages[index >> Int(Self.pageBits)][index & (Self.pageSize - 1)] = record
            }
        }
        let (page, slot) = Self.locate(counter)
        counterPages[page, default: CounterPage()].codes[slot] = UInt32(index) + 2
        counterPages[page]!.held += 1
        activeCount += 1
    }

    /// The slot of `counter`.
    subscript(counter: UInt64) -> Slot {
        let (page, slot) = Self.locate(counter)
        switch counterPages[page]?.codes[slot] ?? 0 {
        case 0: return .empty
        case Self.settledCode: return .settled
        case let code: return .active(record(code))
        }
    }

    /// Turns the active record of `counter` into a tombstone and returns it; nil (and
    /// no change) when the slot is not active.
    @discardableResult
    mutating func settle(_ counter: UInt64) -> Record? {
        let (page, slot) = Self.locate(counter)
        guard let code = counterPages[page]?.codes[slot], code > Self.settledCode else { return nil }
        counterPages[page]!.codes[slot] = Self.settledCode
        settledCount += 1
        return release(code)
    }

    /// Empties the slot of `counter` and returns what it held. Frees the counter page
    /// when it holds nothing more and all its counters have been issued.
    @discardableResult
    mutating func forget(_ counter: UInt64) -> Slot {
        let (page, slot) = Self.locate(counter)
        guard let code = counterPages[page]?.codes[slot], code != 0 else { return .empty }
        let previous: Slot
        if code == Self.settledCode {
            settledCount -= 1
            previous = .settled
        } else {
            previous = .active(release(code))
        }
        counterPages[page]!.codes[slot] = 0
        counterPages[page]!.held -= 1
        let complete = nextCounter >> Self.pageBits != page
        if complete && counterPages[page]!.held == 0 { counterPages.removeValue(forKey: page) }
        return previous
    }

    /// Gives memory back after a burst (the store's sweep calls it): the record pool
    /// once no record is active (the pool otherwise keeps its high-water mark), and the
    /// counter-page table's spare capacity once it is three-quarters empty. O(pages).
    /// Returns whether it gave anything back.
    @discardableResult
    mutating func shrinkIfSparse() -> Bool {
        var shrunk = false
        if activeCount == 0 && !recordPages.isEmpty {
            recordPages = []
            freeRecords = []
            shrunk = true
        }
        return counterPages.shrinkIfSparse() || shrunk
    }

    /// Counter pages allocated (for tests: they follow the leases held).
    var pageCount: Int { counterPages.count }

    /// Records the pool can hold without growing (for tests: its high-water mark).
    var poolCapacity: Int { recordPages.count * Self.pageSize }

    private func record(_ code: UInt32) -> Record {
        let index = Int(code - 2)
        return recordPages[index >> Int(Self.pageBits)][index & (Self.pageSize - 1)]!
    }

    /// Takes the record behind `code` out of the pool and frees its place.
    private mutating func release(_ code: UInt32) -> Record {
        let index = Int(code - 2)
        let record = recordPages[index >> Int(Self.pageBits)][index & (Self.pageSize - 1)].take()!
        freeRecords.append(code - 2)
        activeCount -= 1
        return record
    }

    private static func locate(_ counter: UInt64) -> (page: UInt64, slot: Int) {
        (counter >> pageBits, Int(counter & UInt64(pageSize - 1)))
    }
}
