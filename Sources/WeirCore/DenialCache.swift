import Synchronization

/// A local memory of keys known to be over their request limit, in front of a shared
/// store: while one is, calls on it are denied here, without a round trip. This is what
/// keeps Redis alive when a client hammers a key far beyond its limit.
///
/// **Never changes an outcome.** Only a denial whose reason is `requests` is remembered,
/// and only when the tokens dimension had room for the call (so the retry time is the
/// request dimension's own). Until that retry time passes, no call on the key can be
/// admitted anywhere (a request costs 1, settlements never give requests back, and the
/// request dimension is checked first), so every call with the same limits and at most
/// the remembered units would be denied for `requests` by the store too. The deadline is
/// counted from when the remembered call was *sent*, on this process's monotonic clock,
/// so it never runs past the store's own (Redis `TIME`) deadline. A different limit set
/// (after a recharge or a reload), more units, a shadowed or too-large call: all go to
/// the store.
///
/// The answer repeats the remembered decision with its retry time and resets reduced by
/// the time elapsed. Its remaining counts are those seen then: a settlement elsewhere may
/// have changed the tokens since (an extra charge can even lengthen the real retry time;
/// the next call past the hint gets the store's own answer).
///
/// **Memory.** At most `capacity` keys (default 100,000); expired entries are swept when
/// it is reached, and past it new denials are not remembered (the store still answers).
///
/// Concurrency: thread-safe; 16 lock-striped shards.
public final class DenialCache: RateLimitStore {
    public let store: any RateLimitStore
    private let clock: any NanosecondClock
    private let shards: [Shard]
    private let capacityPerShard: Int
    private let hitCount = Atomic<UInt64>(0)

    private final class Shard: Sendable {
        let entries = Mutex<[LimitKey: Entry]>([:])
    }

    private struct Entry {
        var limits: LimitSet
        var units: UInt64
        /// On `clock`: when the remembered call was sent, and until when it holds.
        var sentAt: UInt64
        var until: UInt64
        var decision: Decision
    }

    /// - Parameters:
    ///   - store: the shared store answering every call not answered here.
    ///   - clock: this process's monotonic clock (`SystemClock`).
    public init(store: any RateLimitStore, clock: any NanosecondClock = SystemClock(), capacity: Int = 100_000) {
        self.store = store
        self.clock = clock
        self.shards = (0..<16).map { _ in Shard() }
        self.capacityPerShard = max(1, capacity / 16)
    }

    /// Calls answered here since start.
    public var hits: UInt64 { hitCount.load(ordering: .relaxed) }

    public func acquire(_ request: AdmissionRequest) async throws -> Decision {
        let shard = shards[Int(request.key.fingerprint & 15)]
        let sentAt = clock.now()
        let eligible = !request.limits.shadow && request.limits.requests != nil
            && !(request.limits.tokens.map { request.units > $0.capacity } ?? false)
        if eligible, let cached = shard.entries.withLock({ $0[request.key] }) {
            if cached.limits == request.limits, request.units <= cached.units, sentAt < cached.until {
                hitCount.add(1, ordering: .relaxed)
                return Self.aged(cached, now: sentAt)
            }
        }
        let decision = try await store.acquire(request)
        if eligible, Self.remembers(decision, units: request.units), let retry = decision.retryAfter {
            let entry = Entry(
                limits: request.limits, units: request.units, sentAt: sentAt, until: sentAt &+ retry, decision: decision)
            remember(entry, key: request.key, in: shard, now: sentAt)
        }
        return decision
    }

    public func settle(_ lease: LeaseID, actualUnits: UInt64) async throws -> Settlement {
        try await store.settle(lease, actualUnits: actualUnits)
    }

    public func status(of key: LimitKey, limits: LimitSet) async throws -> LimitStatuses {
        try await store.status(of: key, limits: limits)
    }

    public func probe() async throws {
        try await store.probe()
    }

    // MARK: - Entries

    /// A denial for `requests` with room in the tokens dimension.
    private static func remembers(_ decision: Decision, units: UInt64) -> Bool {
        guard !decision.isAllowed, decision.reason == .requests, (decision.retryAfter ?? 0) > 0 else { return false }
        guard let tokens = decision.limits.tokens else { return true }
        return tokens.remaining >= units
    }

    private func remember(_ entry: Entry, key: LimitKey, in shard: Shard, now: UInt64) {
        let capacity = capacityPerShard
        shard.entries.withLock { entries in
            if entries.count >= capacity && entries[key] == nil {
                entries = entries.filter { $0.value.until > now }
                guard entries.count < capacity else { return }
            }
            entries[key] = entry
        }
    }

    /// The remembered decision as it stands `now`: retry and resets shortened by the
    /// time elapsed since the call was sent.
    private static func aged(_ entry: Entry, now: UInt64) -> Decision {
        let elapsed = now &- entry.sentAt
        var decision = entry.decision
        decision.retryAfter = decision.retryAfter.map { $0 - min($0, elapsed) }
        func age(_ status: DimensionStatus?) -> DimensionStatus? {
            status.map { DimensionStatus(limit: $0.limit, remaining: $0.remaining, reset: $0.reset - min($0.reset, elapsed)) }
        }
        decision.limits = LimitStatuses(
            requests: age(decision.limits.requests), tokens: age(decision.limits.tokens),
            concurrency: decision.limits.concurrency)
        return decision
    }
}
