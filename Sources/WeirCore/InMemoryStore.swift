import Synchronization

/// A `RateLimitStore` in this process's memory: sharded, lock-striped, no actor.
///
/// Keys are spread over a power-of-two number of shards by hash; each shard is a
/// `Mutex` around a dictionary of key states and the leases issued for those keys.
/// A decision takes exactly one shard lock, does a handful of integer operations and
/// returns; it never suspends, allocates only for sliding-window logs that grow, and
/// never logs. Calls on different shards proceed in parallel.
///
/// **Eviction.** A key that is fully replenished (every GCRA bucket full, every log
/// empty, no slot held) carries no information and is removed: by `evictIdle(at:)`,
/// which a server runs periodically, and by each shard itself whenever its key count
/// doubles since its last sweep (amortized O(1) per decision). Memory therefore
/// follows active keys. Settled and expired lease records are removed the same way.
///
/// Concurrency: thread-safe (`@unchecked Sendable` because the shards sit behind a
/// pointer: the buffer is written only in `init` and `deinit`, and every access to a
/// shard's state goes through its `Mutex`); the `async` requirements of `RateLimitStore` are met by
/// synchronous methods that never suspend. Every method has an `at:` variant taking
/// the time explicitly, for tests and simulation.
public final class InMemoryStore: RateLimitStore, @unchecked Sendable {
    /// Lease ids: 16 bits of instance tag (top bit clear: ids with bit 63 set belong to
    /// other stores, see `issued(_:)`), 8 bits of shard, 40 bits of per-shard counter.
    private static let counterBits: UInt64 = 40
    private static let shardBits: UInt64 = 8

    private let clock: any NanosecondClock
    /// The shards, allocated once: reached through a pointer so that a decision does not
    /// retain and release a shard object.
    private let shards: UnsafeMutableBufferPointer<Shard>
    private let shardMask: Int
    private let instanceTag: UInt64

    /// Creates a store.
    ///
    /// - Parameters:
    ///   - clock: where time comes from; `SystemClock` in production, `ManualClock` in tests.
    ///   - shardCount: rounded up to a power of two, at most 256. More shards mean less
    ///     contention between threads and smaller sweeps. Default 64.
    public init(clock: any NanosecondClock = SystemClock(), shardCount: Int = 64) {
        var count = 1
        while count < min(max(shardCount, 1), 256) { count <<= 1 }
        self.clock = clock
        self.shards = .allocate(capacity: count)
        for index in 0..<count {
            (shards.baseAddress! + index).initialize(to: Shard())
        }
        self.shardMask = count - 1
        self.instanceTag = UInt64.random(in: 1...0x7FFF)
    }

    deinit {
        _ = shards.baseAddress!.deinitialize(count: shards.count)
        shards.deallocate()
    }

    // MARK: - RateLimitStore

    public func acquire(_ request: AdmissionRequest) -> Decision {
        acquire(request, at: clock.now())
    }

    public func settle(_ lease: LeaseID, actualUnits: UInt64) throws(LeaseError) -> Settlement {
        try settle(lease, actualUnits: actualUnits, at: clock.now())
    }

    public func status(of key: LimitKey, limits: LimitSet) -> LimitStatuses {
        status(of: key, limits: limits, at: clock.now())
    }

    /// Whether `lease` has this store's instance tag, i.e. could have been issued here.
    ///
    /// Never true for an id with bit 63 set (`RedisStore` issues only those), so a store
    /// that falls back to this one tells the two kinds of lease apart without a lookup.
    public func issued(_ lease: LeaseID) -> Bool {
        lease.rawValue >> 48 == instanceTag
    }

    // MARK: - Explicit time

    /// Decides `request` at `now` (nanoseconds on this store's clock).
    public func acquire(_ request: AdmissionRequest, at now: UInt64) -> Decision {
        let index = shardIndex(request.key)
        return shards[index].state.withLock { state in
            state.acquire(request, now: now, leaseBase: instanceTag << 48 | UInt64(index) << 40)
        }
    }

    /// Settles `lease` with `actualUnits` at `now`.
    public func settle(_ lease: LeaseID, actualUnits: UInt64, at now: UInt64) throws(LeaseError) -> Settlement {
        let raw = lease.rawValue
        let index = Int((raw >> Self.counterBits) & ((1 << Self.shardBits) - 1))
        guard raw >> 48 == instanceTag, index < shards.count else { throw .unknown(lease) }
        return try shards[index].state.withLock { state throws(LeaseError) in
            try state.settle(lease, counter: raw & ((1 << Self.counterBits) - 1), actualUnits: actualUnits, now: now)
        }
    }

    /// The statuses of `key` at `now`, without consuming.
    public func status(of key: LimitKey, limits: LimitSet, at now: UInt64) -> LimitStatuses {
        shards[shardIndex(key)].state.withLock { state in
            state.withKey(key, limits: limits, create: false) { $0.statuses(limits, now: now) }
        }
    }

    // MARK: - Housekeeping

    /// Removes every fully replenished key and every finished lease record at `now`.
    /// Returns how many keys were removed. Takes each shard's lock in turn.
    @discardableResult
    public func evictIdle(at now: UInt64) -> Int {
        (0..<shards.count).reduce(0) { removed, index in
            removed + shards[index].state.withLock { $0.sweep(now: now) }
        }
    }

    /// `evictIdle(at:)` at the clock's time.
    @discardableResult
    public func evictIdle() -> Int { evictIdle(at: clock.now()) }

    /// How many times a sweep has given a shard's tables' spare memory back (after a
    /// burst of keys or leases went quiet): the moments worth returning freed memory to
    /// the system (`EvictionService`). Takes each shard's lock in turn.
    public var tablesShrunk: Int {
        (0..<shards.count).reduce(0) { count, index in count + shards[index].state.withLock { $0.tablesShrunk } }
    }

    /// How many keys the store holds (active or not yet swept).
    public var keyCount: Int {
        (0..<shards.count).reduce(0) { count, index in count + shards[index].state.withLock { $0.keys.count } }
    }

    /// Slots allocated in the shards' key tables (for tests: after a burst goes quiet,
    /// the sweep gives them back).
    var tableCapacity: Int {
        (0..<shards.count).reduce(0) { total, index in
            total + shards[index].state.withLock { $0.keys.capacity + $0.extras.capacity }
        }
    }

    /// The accounts that hold state here (keys not yet evicted: used within their
    /// window, or holding a slot), at most `limit` of them, in no order. Takes each
    /// shard's lock in turn: for dashboards, not for the decision path.
    public func accounts(limit: Int = .max) -> Set<String> {
        var accounts = Set<String>()
        for index in 0..<shards.count where accounts.count < limit {
            shards[index].state.withLock { state in
                for key in state.keys.keys where accounts.count < limit { accounts.insert(key.account) }
            }
        }
        return accounts
    }

    /// How many leases the store remembers: active ones, and settled ones (as a bare
    /// counter) until their TTL so that a second settlement is recognised.
    public var leaseCount: Int {
        (0..<shards.count).reduce(0) { count, index in
            count + shards[index].state.withLock { $0.leases.activeCount + $0.leases.settledCount }
        }
    }

    /// How many leases are active at `now`: issued, not settled, not past their TTL. Exact.
    public func activeLeaseCount(at now: UInt64) -> Int {
        (0..<shards.count).reduce(0) { count, index in
            count + shards[index].state.withLock { state in
                state.expireLeases(now: now, limit: .max)
                return state.leases.activeCount
            }
        }
    }

    /// `activeLeaseCount(at:)` at the clock's time.
    public var activeLeaseCount: Int { activeLeaseCount(at: clock.now()) }

    @inline(__always)
    private func shardIndex(_ key: LimitKey) -> Int {
        key.fingerprint & shardMask
    }
}

/// One lock stripe, padded to two cache lines so that two threads working on
/// neighbouring shards never contend on one line.
private struct Shard: ~Copyable, Sendable {
    let state = Mutex(ShardState())
    private let padding: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
}

/// A lease as its shard remembers it.
private struct LeaseRecord {
    var key: LimitKey
    var limits: LimitSet
    var reserved: UInt64
    var tokensLoggedAt: UInt64
    var expiresAt: UInt64
    /// False for a shadowed denial: its settlement charges nothing.
    var consumed: Bool
}

/// The state behind one shard's lock.
private struct ShardState: ~Copyable {
    var keys: [LimitKey: KeyBuckets] = [:]
    /// Logs and slots, only for keys that have them.
    var extras: [LimitKey: KeyExtras] = [:]
    /// Lease records by counter: active ones, and settled ones as tombstones until their
    /// TTL, so that a second settlement is told apart from an expired one.
    var leases = LeaseTable<LeaseRecord>()
    /// Lease records by TTL, so they leave a few at a time as they expire.
    var leaseExpiries = ExpiryQueue()
    /// Sweep idle keys when the key count reaches this.
    var sweepAt = 1024
    /// Sweeps that gave table memory back (`InMemoryStore.tablesShrunk`).
    var tablesShrunk = 0

    @inline(__always)
    mutating func acquire(_ request: AdmissionRequest, now: UInt64, leaseBase: UInt64) -> Decision {
        var leaseID: LeaseID?
        if request.leaseTTL != nil {
            leaseID = LeaseID(rawValue: leaseBase | leases.reserve())
        }
        let admission = withKey(request.key, limits: request.limits, create: true) {
            $0.admit(request, now: now, lease: leaseID)
        }
        if let lease = admission.decision.lease {
            let counter = lease.id.rawValue & ((1 << 40) - 1)
            leases.insert(
                LeaseRecord(
                    key: request.key, limits: request.limits, reserved: lease.reservedUnits,
                    tokensLoggedAt: admission.tokensLoggedAt, expiresAt: lease.expiresAt,
                    consumed: admission.consumed),
                at: counter)
            leaseExpiries.insert(deadline: lease.expiresAt, id: counter)
            // Two expiries per lease issued: records leave at least as fast as they come.
            // Judged at this call's time, as slots are: after a backwards clock jump a
            // record is never forgotten while its slot still counts.
            expireLeases(now: now, limit: 2)
        }
        if keys.count >= sweepAt {
            _ = sweep(now: now)
        }
        return admission.decision
    }

    mutating func settle(_ lease: LeaseID, counter: UInt64, actualUnits: UInt64, now: UInt64) throws(LeaseError) -> Settlement {
        let record: LeaseRecord
        switch leases[counter] {
        case .active(let active):
            if active.expiresAt <= now { throw .expired(lease) }
            record = active
            leases.settle(counter)
        case .settled:
            throw .alreadySettled(lease)
        case .empty:
            throw leases.wasIssued(counter) ? .expired(lease) : .unknown(lease)
        }
        var charged: UInt64 = 0
        var refunded: UInt64 = 0
        let limits = record.limits
        let statuses = withKey(record.key, limits: limits, create: true) { keyState in
            if record.consumed {
                (charged, refunded) = keyState.settle(
                    lease: lease, reserved: record.reserved, actual: actualUnits,
                    tokensLoggedAt: record.tokensLoggedAt, limits: limits, now: now)
            }
            return keyState.statuses(limits, now: now)
        }
        return Settlement(key: record.key, charged: charged, refunded: refunded, limits: statuses, limitSet: limits)
    }

    /// Runs `body` on `key`'s state, assembled from its buckets and (when `limits` need
    /// them) its extras, and stores what `body` leaves. One lookup in each table used.
    ///
    /// - Parameter create: whether to store the key if it is new (false for read-only use).
    @inline(__always)
    mutating func withKey<Result>(
        _ key: LimitKey, limits: LimitSet, create: Bool, _ body: (inout KeyState) -> Result
    ) -> Result {
        let needsExtras = KeyState.needsExtras(limits)
        var extras = needsExtras ? self.extras[key] : nil
        let hadExtras = extras != nil
        let result: Result
        if create {
            result = Self.run(&keys[key, default: KeyBuckets()], &extras, body)
        } else {
            var buckets = keys[key] ?? KeyBuckets()
            result = Self.run(&buckets, &extras, body)
        }
        if create, !hadExtras, let extras { self.extras[key] = extras }
        return result
    }

    @inline(__always)
    private static func run<Result>(
        _ buckets: inout KeyBuckets, _ extras: inout KeyExtras?, _ body: (inout KeyState) -> Result
    ) -> Result {
        var state = KeyState(buckets: buckets, extras: extras)
        let result = body(&state)
        buckets = state.buckets
        extras = state.extras
        return result
    }

    /// Removes idle keys and finished lease records; returns the keys removed.
    mutating func sweep(now: UInt64) -> Int {
        var idle: [LimitKey] = []
        for (key, buckets) in keys {
            var state = KeyState(buckets: buckets, extras: extras[key])
            if state.isIdle(now: now) { idle.append(key) }
        }
        for key in idle {
            keys.removeValue(forKey: key)
            extras.removeValue(forKey: key)
        }
        expireLeases(now: now, limit: .max)
        // After a burst of new keys goes quiet, give the tables' memory back: a Swift
        // dictionary keeps its capacity when entries leave.
        var shrunk = keys.shrinkIfSparse()
        shrunk = extras.shrinkIfSparse() || shrunk
        shrunk = leases.shrinkIfSparse() || shrunk
        shrunk = leaseExpiries.shrinkIfSparse() || shrunk
        if shrunk { tablesShrunk += 1 }
        sweepAt = max(1024, 2 * keys.count)
        return idle.count
    }

    /// Forgets up to `limit` lease records whose TTL has passed at `now`, earliest first.
    /// An unsettled one stops being active (its slot was freed by the same TTL).
    mutating func expireLeases(now: UInt64, limit: Int) {
        var removed = 0
        while removed < limit, let due = leaseExpiries.popExpired(at: now) {
            leases.forget(due.id)
            removed += 1
        }
    }
}
