import Testing
import WeirConformance
@testable import WeirCore

@Suite("InMemoryStore")
struct InMemoryStoreTests {
    @Test("passes the store conformance suite", arguments: StoreConformance.checks)
    func conformance(_ check: StoreConformance.Check) async throws {
        try await check.run { clock in InMemoryStore(clock: clock) }
    }

    @Test("passes the conformance suite with a single shard")
    func singleShard() async throws {
        for check in StoreConformance.checks {
            try await check.run { clock in InMemoryStore(clock: clock, shardCount: 1) }
        }
    }

    @Test("idle keys are evicted once fully replenished, busy ones kept")
    func eviction() {
        let clock = ManualClock(start: 1_000_000_000_000)
        let store = InMemoryStore(clock: clock, shardCount: 4)
        let window = 60 * Nanoseconds.perSecond
        let gcra = LimitSet(requests: Limit(algorithm: .gcra, limit: 10, window: window))
        let sliding = LimitSet(tokens: Limit(algorithm: .slidingWindow, limit: 100, window: window))
        for index in 0..<100 {
            _ = store.acquire(AdmissionRequest(key: LimitKey(account: "a\(index)", scope: "g"), limits: gcra))
            _ = store.acquire(AdmissionRequest(key: LimitKey(account: "a\(index)", scope: "s"), limits: sliding, units: 5))
        }
        #expect(store.keyCount == 200)
        clock.advance(by: window / 10 - 1)
        #expect(store.evictIdle() == 0, "one request of 10 per minute refills in 6 s; nothing is idle 1 ns before")
        clock.advance(by: 1)
        #expect(store.evictIdle() == 100, "the GCRA keys are full again after 6 s")
        clock.advance(by: window - window / 10 - 1)
        #expect(store.evictIdle() == 0, "log entries count until exactly t + W")
        clock.advance(by: 1)
        #expect(store.evictIdle() == 100)
        #expect(store.keyCount == 0)
    }

    @Test("a key holding a slot is never evicted; its lease record goes at the TTL")
    func slotsKeepKeys() throws {
        let clock = ManualClock(start: 5_000)
        let store = InMemoryStore(clock: clock)
        let limits = LimitSet(concurrency: .concurrent(2))
        let decision = store.acquire(AdmissionRequest(key: LimitKey(account: "m", scope: "music"), limits: limits, leaseTTL: 1_000))
        #expect(decision.lease?.holdsSlot == true)
        #expect(store.evictIdle() == 0)
        #expect(store.leaseCount == 1)
        clock.advance(by: 1_000)
        #expect(store.evictIdle() == 1)
        #expect(store.leaseCount == 0)
        #expect(throws: LeaseError.expired(decision.lease!.id)) {
            try store.settle(decision.lease!.id, actualUnits: 0)
        }
    }

    @Test("shards sweep themselves as they grow, so memory follows active keys")
    func amortizedSweep() {
        let clock = ManualClock(start: 1)
        let store = InMemoryStore(clock: clock, shardCount: 1)
        let limits = LimitSet(requests: Limit(algorithm: .gcra, limit: 1, window: 1_000))
        for index in 0..<10_000 {
            clock.advance(by: 1_000)  // every earlier key is full again
            _ = store.acquire(AdmissionRequest(key: LimitKey(account: "k\(index)", scope: "s"), limits: limits))
        }
        #expect(store.keyCount < 2_048)
    }

    @Test("after a burst of new keys goes quiet, the sweep gives the tables' memory back")
    func shrinksAfterBurst() throws {
        let clock = ManualClock(start: 1)
        let store = InMemoryStore(clock: clock, shardCount: 4)
        let window: UInt64 = 60_000_000_000
        let sliding = LimitSet(requests: Limit(algorithm: .slidingWindow, limit: 5, window: window))
        for index in 0..<20_000 {
            let decision = store.acquire(AdmissionRequest(key: LimitKey(account: "burst-\(index)", scope: "s"), limits: sliding))
            #expect(decision.isAllowed)
        }
        #expect(store.keyCount == 20_000)
        #expect(store.tableCapacity >= 40_000, "keys and extras both hold every key")
        #expect(store.tablesShrunk == 0, "nothing to give back while the keys are in use")
        clock.advance(by: window)
        #expect(store.evictIdle() == 20_000)
        #expect(store.tableCapacity < 2_048, "capacity \(store.tableCapacity) follows the keys left")
        let shrunk = store.tablesShrunk
        #expect(shrunk >= 1 && shrunk <= 4, "each shard said once that it gave memory back: \(shrunk)")
        #expect(store.evictIdle() == 0)
        #expect(store.tablesShrunk == shrunk, "a sweep with nothing to give back says nothing")
        // The store decides on as before: a key used again starts afresh, and its limit holds.
        let key = LimitKey(account: "burst-7", scope: "s")
        for _ in 0..<5 { #expect(store.acquire(AdmissionRequest(key: key, limits: sliding)).isAllowed) }
        #expect(!store.acquire(AdmissionRequest(key: key, limits: sliding)).isAllowed)
    }

    @Test("lease ids print and parse back")
    func leaseIDs() {
        let id = LeaseID(rawValue: 0x00AB_0000_0000_0042)
        #expect(id.description == "00ab000000000042")
        #expect(LeaseID(string: id.description) == id)
        #expect(LeaseID(string: "xyz") == nil)
        #expect(LeaseID(string: "00ab00000000004") == nil)
    }

    @Test("the active lease count is exact: issued, settled, expired")
    func activeLeases() throws {
        let clock = ManualClock(start: 1_000)
        let store = InMemoryStore(clock: clock, shardCount: 4)
        let limits = LimitSet(requests: .perMinute(1_000))
        var leases: [LeaseID] = []
        for index in 0..<10 {
            let ttl: UInt64 = index < 5 ? 100 : 1_000
            let decision = store.acquire(AdmissionRequest(key: LimitKey(account: "a\(index)", scope: "s"), limits: limits, leaseTTL: ttl))
            leases.append(decision.lease!.id)
        }
        _ = store.acquire(AdmissionRequest(key: LimitKey(account: "none", scope: "s"), limits: limits))  // no lease
        #expect(store.activeLeaseCount == 10)
        _ = try store.settle(leases[0], actualUnits: 0)
        _ = try store.settle(leases[9], actualUnits: 0)
        #expect(store.activeLeaseCount == 8)
        clock.advance(by: 99)
        #expect(store.activeLeaseCount == 8, "1 ns before the short TTL")
        clock.advance(by: 1)
        #expect(store.activeLeaseCount == 4, "the four unsettled short leases expired")
        clock.advance(by: 900)
        #expect(store.activeLeaseCount == 0)
        #expect(store.leaseCount == 0, "settled tombstones leave at their TTL too")
    }

    @Test("unsettled leases under sustained load are forgotten as they expire, without a sweep")
    func leaseRecordsStayBounded() {
        let clock = ManualClock(start: 1)
        let store = InMemoryStore(clock: clock, shardCount: 1)
        let limits = LimitSet(requests: Limit(algorithm: .gcra, limit: 1_000_000, window: 1_000))
        let key = LimitKey(account: "busy", scope: "s")
        for _ in 0..<50_000 {
            clock.advance(by: 1)
            _ = store.acquire(AdmissionRequest(key: key, limits: limits, leaseTTL: 100))
        }
        // With a 100 ns TTL and one lease per ns, about 100 are alive at any time.
        #expect(store.leaseCount <= 101)
        #expect(store.activeLeaseCount == 100)
    }
}

@Suite("Sliding window near 2^64")
struct SlidingWindowSaturationTests {
    @Test("extra charges that saturate a huge limit's total never crash, and the key drains when its window passes")
    func saturatedTotal() throws {
        let clock = ManualClock(start: 1_000)
        let store = InMemoryStore(clock: clock, shardCount: 1)
        let limits = LimitSet(tokens: Limit(algorithm: .slidingWindow, limit: UInt64.max - 1, window: 1_000))
        let key = LimitKey(account: "a", scope: "s")
        // Two entries whose costs (after extra charges) sum past 2^64 - 1: pruning the
        // second from the saturated total used to trap.
        for step in 0..<2 {
            let decision = store.acquire(AdmissionRequest(key: key, limits: limits, units: 1, leaseTTL: 10_000))
            let lease = try #require(decision.lease, "call \(step) is allowed")
            _ = try store.settle(lease.id, actualUnits: UInt64.max / 2 + 10)
            clock.advance(by: 1)
        }
        #expect(!store.acquire(AdmissionRequest(key: key, limits: limits, units: 1)).isAllowed, "the saturated total denies")
        clock.advance(by: 1_000)
        #expect(store.acquire(AdmissionRequest(key: key, limits: limits, units: 1)).isAllowed, "and drains once the window passes")
    }
}
