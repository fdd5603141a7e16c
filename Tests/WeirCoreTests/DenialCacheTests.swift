import Synchronization
import Testing
import WeirConformance
import WeirCore

@Suite("DenialCache")
struct DenialCacheTests {
    /// Random timelines over a few keys, each call sent once straight to a store and once
    /// through a cache in front of a twin store: outcomes (allowed, reason) are always the
    /// same, and so are retry times while no settlement charges extra.
    @Test("never changes an outcome", arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
    func sameOutcomes(seed: UInt64) async throws {
        var random = SeededGenerator(seed: seed)
        let clock = ManualClock(start: 1_000 * Nanoseconds.perSecond)
        let direct = InMemoryStore(clock: clock)
        let cache = DenialCache(store: InMemoryStore(clock: clock), clock: clock)
        let window = 60 * Nanoseconds.perSecond
        let algorithm: Algorithm = seed.isMultiple(of: 2) ? .gcra : .slidingWindow
        let limitSets = [
            LimitSet(requests: Limit(algorithm: algorithm, limit: 5, window: window),
                     tokens: Limit(algorithm: algorithm, limit: 400, window: window)),
            LimitSet(requests: Limit(algorithm: algorithm, limit: 7, window: 10 * Nanoseconds.perSecond)),
            LimitSet(requests: Limit(algorithm: algorithm, limit: 3, window: window),
                     tokens: Limit(algorithm: algorithm, limit: 100, window: window),
                     concurrency: .concurrent(2)),
        ]
        let extraCharges = seed > 6
        var leases: [(LeaseID, LeaseID, UInt64)] = []
        var hitsExpected = false
        for _ in 0..<1_500 {
            clock.advance(by: UInt64.random(in: 0...(2 * Nanoseconds.perSecond), using: &random))
            if !leases.isEmpty, Bool.random(using: &random) {
                let (a, b, reserved) = leases.removeFirst()
                let actual = extraCharges ? UInt64.random(in: 0...(2 * reserved + 10), using: &random) : UInt64.random(in: 0...reserved, using: &random)
                let left = try? await direct.settle(a, actualUnits: actual)
                let right = try? await cache.settle(b, actualUnits: actual)
                #expect(left?.charged == right?.charged)
                continue
            }
            let index = Int.random(in: 0..<limitSets.count, using: &random)
            let request = AdmissionRequest(
                key: LimitKey(account: "acct\(index % 2)", scope: "s\(index)"), limits: limitSets[index],
                units: UInt64.random(in: 0...60, using: &random),
                leaseTTL: Bool.random(using: &random) ? 30 * Nanoseconds.perSecond : nil)
            let expected = try await direct.acquire(request)
            let got = try await cache.acquire(request)
            #expect(got.isAllowed == expected.isAllowed)
            #expect(got.reason == expected.reason)
            if !extraCharges { #expect(got.retryAfter == expected.retryAfter) }
            if !expected.isAllowed && expected.reason == .requests { hitsExpected = true }
            if let a = expected.lease?.id, let b = got.lease?.id, let reserved = expected.lease?.reservedUnits {
                leases.append((a, b, reserved))
            }
        }
        #expect(hitsExpected)
        #expect(cache.hits > 0, "denials were answered locally")
    }

    @Test("a key over its request limit is answered locally until exactly its retry time")
    func answersLocallyUntilRetry() async throws {
        let clock = ManualClock(start: 0)
        let counting = CountingStore(InMemoryStore(clock: clock))
        let cache = DenialCache(store: counting, clock: clock)
        let limits = LimitSet(requests: Limit(algorithm: .slidingWindow, limit: 2, window: 1_000))
        let request = AdmissionRequest(key: LimitKey(account: "a", scope: "m"), limits: limits)
        #expect(try await cache.acquire(request).isAllowed)
        clock.advance(by: 100)
        #expect(try await cache.acquire(request).isAllowed)
        let denial = try await cache.acquire(request)
        #expect(denial.retryAfter == 900)
        #expect(counting.calls == 3)
        clock.advance(by: 899)
        let local = try await cache.acquire(request)
        #expect(!local.isAllowed && local.reason == .requests && local.retryAfter == 1)
        #expect(counting.calls == 3, "answered without the store")
        #expect(cache.hits == 1)
        clock.advance(by: 1)
        #expect(try await cache.acquire(request).isAllowed, "at the retry time the store answers, and allows")
        #expect(counting.calls == 4)
        // Different limits (a recharge) are never answered from the cache.
        _ = try await cache.acquire(request)
        let denied = try await cache.acquire(request)
        #expect(!denied.isAllowed)
        let upgraded = AdmissionRequest(key: request.key, limits: LimitSet(requests: Limit(algorithm: .slidingWindow, limit: 50, window: 1_000)))
        #expect(try await cache.acquire(upgraded).isAllowed)
    }
}

/// A store that counts the calls reaching it.
final class CountingStore: RateLimitStore, @unchecked Sendable {
    let inner: InMemoryStore
    private let count = Mutex(0)
    init(_ inner: InMemoryStore) { self.inner = inner }
    var calls: Int { count.withLock { $0 } }
    func acquire(_ request: AdmissionRequest) async throws -> Decision {
        count.withLock { $0 += 1 }
        return inner.acquire(request)
    }
    func settle(_ lease: LeaseID, actualUnits: UInt64) async throws -> Settlement {
        try inner.settle(lease, actualUnits: actualUnits)
    }
    func status(of key: LimitKey, limits: LimitSet) async throws -> LimitStatuses {
        inner.status(of: key, limits: limits)
    }
}
