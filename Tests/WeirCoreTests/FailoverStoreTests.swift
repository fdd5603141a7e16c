import Synchronization
import Testing
import WeirCore

@Suite("FailoverStore")
struct FailoverStoreTests {
    static let limits = LimitSet(requests: Limit(algorithm: .slidingWindow, limit: 2, window: 60 * Nanoseconds.perSecond))
    static let request = AdmissionRequest(key: LimitKey(account: "a", scope: "text/m"), limits: limits, leaseTTL: 1_000_000)

    @Test("local mode: the in-memory limiter with the same rules decides during an outage; the primary takes over again by itself")
    func localMode() async throws {
        let clock = ManualClock(start: 1)
        let primary = OutageStore(InMemoryStore(clock: clock))
        let changes = Mutex<[FailoverStore.Change]>([])
        let store = FailoverStore(
            primary: primary, fallback: InMemoryStore(clock: clock), mode: .local, clock: clock,
            backoff: .init(initial: 1_000, maximum: 1_000), jitter: { $0 },
            onChange: { change in changes.withLock { $0.append(change) } })
        #expect(try await store.acquire(Self.request).isAllowed)
        primary.down = true
        #expect(try await store.acquire(Self.request).isAllowed, "fallback: 1 of 2")
        #expect(store.health.isDegraded)
        #expect(try await store.acquire(Self.request).isAllowed, "fallback: 2 of 2")
        let denied = try await store.acquire(Self.request)
        #expect(!denied.isAllowed && denied.reason == .requests, "the local limiter enforces the same limit")
        #expect(primary.attempts == 2, "while degraded, calls do not wait on the primary before the probe interval")
        #expect(store.health.fallbackDecisions == 3)
        #expect(store.health.outages == 1)
        primary.down = false
        clock.advance(by: 999)
        _ = try await store.acquire(Self.request)
        #expect(primary.attempts == 2)
        clock.advance(by: 1)
        #expect(try await store.acquire(Self.request).isAllowed, "the probe reaches the recovered primary: 2 of 2 there")
        #expect(!store.health.isDegraded)
        #expect(primary.attempts == 3)
        _ = try await store.acquire(Self.request)
        // One change reported per change of state, not per call.
        #expect(changes.withLock { $0 } == [.degraded(error: "connection refused"), .recovered])
    }

    @Test("leases are settled where they were issued, on either side of an outage")
    func leasesSettleWhereIssued() async throws {
        let clock = ManualClock(start: 1)
        let primary = OutageStore(InMemoryStore(clock: clock))
        let store = FailoverStore(primary: primary, fallback: InMemoryStore(clock: clock), mode: .local, clock: clock)
        let before = try #require(try await store.acquire(Self.request).lease)
        primary.down = true
        let during = try #require(try await store.acquire(Self.request).lease)
        primary.down = false
        #expect(try await store.settle(during.id, actualUnits: 0).key == Self.request.key)
        #expect(try await store.settle(before.id, actualUnits: 0).key == Self.request.key)
        await #expect(throws: LeaseError.self) { try await store.settle(during.id, actualUnits: 0) }
    }

    @Test("allow mode allows everything and still issues settleable leases; deny mode fails fast")
    func allowAndDeny() async throws {
        let clock = ManualClock(start: 1)
        let primary = OutageStore(InMemoryStore(clock: clock))
        primary.down = true
        let allow = FailoverStore(primary: primary, fallback: InMemoryStore(clock: clock), mode: .allow, clock: clock)
        for _ in 0..<5 {
            let decision = try await allow.acquire(Self.request)
            #expect(decision.isAllowed)
            let lease = try #require(decision.lease)
            _ = try await allow.settle(lease.id, actualUnits: 0)
        }
        let deny = FailoverStore(primary: primary, fallback: InMemoryStore(clock: clock), mode: .deny, clock: clock)
        await #expect(throws: StoreError.self) { try await deny.acquire(Self.request) }
        #expect(deny.health.isDegraded)
    }

    static let millisecond = Nanoseconds.perMillisecond

    @Test("recovery by itself: probes on a capped exponential backoff, no call needed, in every mode", arguments: FailoverStore.Mode.allCases)
    func recoversWithoutTraffic(mode: FailoverStore.Mode) async throws {
        let clock = ManualClock(start: 1)
        let primary = OutageStore(InMemoryStore(clock: clock))
        let changes = Mutex<[FailoverStore.Change]>([])
        let store = FailoverStore(
            primary: primary, fallback: InMemoryStore(clock: clock), mode: mode, clock: clock, jitter: { $0 },
            onChange: { change in changes.withLock { $0.append(change) } })
        // Healthy: the first health check is due at once, the next a health interval on.
        #expect(await store.probeIfDue() == Nanoseconds.perSecond)
        #expect(primary.attempts == 1)
        // A call made during the outage marks it (deny mode throws, the others decide).
        primary.down = true
        _ = try? await store.acquire(Self.request)
        #expect(store.health.isDegraded)
        let attemptsAtOutage = primary.attempts
        // Not due yet: nothing goes to the primary.
        clock.advance(by: 99 * Self.millisecond)
        #expect(await store.probeIfDue() == Self.millisecond)
        #expect(primary.attempts == attemptsAtOutage)
        // Each failed probe doubles the wait, up to 2 s.
        clock.advance(by: Self.millisecond)
        var waits: [UInt64] = []
        for _ in 0..<7 {
            let wait = await store.probeIfDue()
            waits.append(wait / Self.millisecond)
            clock.advance(by: wait)
        }
        #expect(waits == [200, 400, 800, 1_600, 2_000, 2_000, 2_000])
        #expect(primary.attempts == attemptsAtOutage + 7)
        #expect(store.health.isDegraded)
        // The primary answers again; no call comes. The next due probe ends the outage.
        primary.down = false
        #expect(await store.probeIfDue() == Nanoseconds.perSecond, "back to health checks")
        #expect(!store.health.isDegraded)
        #expect(changes.withLock { $0 } == [.degraded(error: "connection refused"), .recovered])
        #expect(try await store.acquire(Self.request).isAllowed)
    }

    @Test("an outage is seen without traffic: the health check marks the store degraded")
    func healthCheckSeesOutage() async throws {
        let clock = ManualClock(start: 1)
        let primary = OutageStore(InMemoryStore(clock: clock))
        let store = FailoverStore(primary: primary, fallback: InMemoryStore(clock: clock), mode: .deny, clock: clock, jitter: { $0 })
        #expect(await store.probeIfDue() == Nanoseconds.perSecond)
        primary.down = true
        clock.advance(by: Nanoseconds.perSecond - 1)
        #expect(await store.probeIfDue() == 1)
        #expect(!store.health.isDegraded)
        clock.advance(by: 1)
        #expect(await store.probeIfDue() == 100 * Self.millisecond)
        #expect(store.health.isDegraded)
        #expect(store.health.outages == 1)
    }

    @Test("the backoff: nominal waits double up to the cap; jitter stays within [d/2, d]")
    func backoffBounds() {
        let backoff = FailoverStore.Backoff()
        #expect((0..<8).map { backoff.delay(afterFailures: $0) / Self.millisecond } == [100, 200, 400, 800, 1_600, 2_000, 2_000, 2_000])
        #expect(backoff.delay(afterFailures: 1_000) == 2 * Nanoseconds.perSecond, "no overflow")
        for nominal: UInt64 in [1, 2, 3, 100 * Self.millisecond, 2 * Nanoseconds.perSecond] {
            for _ in 0..<200 {
                let drawn = FailoverStore.randomJitter(nominal)
                #expect(drawn >= nominal / 2 && drawn <= nominal)
            }
        }
    }

    @Test("a permanent store error is rethrown and is no outage")
    func permanentErrors() async throws {
        let clock = ManualClock(start: 1)
        let primary = OutageStore(InMemoryStore(clock: clock))
        primary.permanentFailure = true
        let store = FailoverStore(primary: primary, fallback: InMemoryStore(clock: clock), mode: .local, clock: clock)
        await #expect(throws: StoreError.self) { try await store.acquire(Self.request) }
        #expect(!store.health.isDegraded)
    }
}

/// An in-memory store that can be switched off, failing as an unreachable Redis does.
final class OutageStore: RateLimitStore, @unchecked Sendable {
    let inner: InMemoryStore
    private let state = Mutex((down: false, permanent: false, attempts: 0))
    init(_ inner: InMemoryStore) { self.inner = inner }

    var down: Bool {
        get { state.withLock { $0.down } }
        set { state.withLock { $0.down = newValue } }
    }
    var permanentFailure: Bool {
        get { state.withLock { $0.permanent } }
        set { state.withLock { $0.permanent = newValue } }
    }
    var attempts: Int { state.withLock { $0.attempts } }

    private func check() throws {
        let (down, permanent) = state.withLock { state in
            state.attempts += 1
            return (state.down, state.permanent)
        }
        if permanent { throw StoreError("script error", isTransient: false) }
        if down { throw StoreError("connection refused", isTransient: true) }
    }

    func acquire(_ request: AdmissionRequest) async throws -> Decision {
        try check()
        return inner.acquire(request)
    }
    func settle(_ lease: LeaseID, actualUnits: UInt64) async throws -> Settlement {
        try check()
        return try inner.settle(lease, actualUnits: actualUnits)
    }
    func status(of key: LimitKey, limits: LimitSet) async throws -> LimitStatuses {
        try check()
        return inner.status(of: key, limits: limits)
    }
    func probe() async throws {
        try check()
    }
}
