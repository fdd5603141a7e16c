import WeirCore

/// Checks of atomic admission, leases, shadow mode and isolation.
extension StoreConformance {
    static let textLimits = LimitSet(
        requests: Limit(algorithm: .slidingWindow, limit: 10, window: 60 * Nanoseconds.perSecond),
        tokens: Limit(algorithm: .slidingWindow, limit: 100, window: 60 * Nanoseconds.perSecond))

    static func atomicAcrossDimensions(clock: ManualClock, store: any RateLimitStore) async throws {
        let k = key("atomic")
        _ = try await store.acquire(AdmissionRequest(key: k, limits: textLimits, units: 90))
        let denied = try await store.acquire(AdmissionRequest(key: k, limits: textLimits, units: 20))
        try require(!denied.isAllowed && denied.reason == .tokens, "20 tokens over 90 of 100 must be denied on tokens")
        let after = try await store.status(of: k, limits: textLimits)
        try require(after.requests?.remaining == 9 && after.tokens?.remaining == 10,
                    "a denial consumed something: \(after)")

        // Concurrency denies: requests and tokens stay untouched.
        var music = textLimits
        music.concurrency = .concurrent(1)
        let m = key("atomic-music", scope: "music-generation/Music-2.0")
        let held = try await store.acquire(AdmissionRequest(key: m, limits: music, units: 10, leaseTTL: 60 * second))
        try require(held.isAllowed && held.lease?.holdsSlot == true, "the first call must take the slot")
        let refused = try await store.acquire(AdmissionRequest(key: m, limits: music, units: 10, leaseTTL: 60 * second))
        try require(!refused.isAllowed && refused.reason == .concurrency && refused.retryAfter == nil,
                    "the second call must be refused on concurrency with no retry time: \(refused)")
        let music2 = try await store.status(of: m, limits: music)
        try require(music2.requests?.remaining == 9 && music2.tokens?.remaining == 90 && music2.concurrency?.remaining == 0,
                    "a concurrency denial consumed something: \(music2)")
        // A call that takes no lease has no concurrency cost.
        let instant = try await store.acquire(AdmissionRequest(key: m, limits: music, units: 10))
        try require(instant.isAllowed, "a call without a lease must not wait for a slot")
    }

    static func tooLarge(clock: ManualClock, store: any RateLimitStore) async throws {
        let k = key("large")
        let decision = try await store.acquire(AdmissionRequest(key: k, limits: textLimits, units: 101))
        try require(!decision.isAllowed && decision.reason == .tooLarge && decision.retryAfter == nil,
                    "101 tokens against 100 must be too large with no retry: \(decision)")
        let status = try await store.status(of: k, limits: textLimits)
        try require(status.requests?.remaining == 10 && status.tokens?.remaining == 100, "too large consumed: \(status)")
        let exact = try await store.acquire(AdmissionRequest(key: k, limits: textLimits, units: 100))
        try require(exact.isAllowed, "exactly the limit must fit")
    }

    static func raisedLimitHelpsAtOnce(clock: ManualClock, store: any RateLimitStore) async throws {
        let k = key("upgrade")
        let free = LimitSet(requests: .perMinute(2))
        let paid = LimitSet(requests: .perMinute(5))
        for _ in 0..<2 { _ = try await store.acquire(AdmissionRequest(key: k, limits: free)) }
        let denied = try await store.acquire(AdmissionRequest(key: k, limits: free))
        try require(!denied.isAllowed, "the third call under 2 RPM must be denied")
        let upgraded = try await store.acquire(AdmissionRequest(key: k, limits: paid))
        try require(upgraded.isAllowed && upgraded.limits.requests?.remaining == 2,
                    "after the raise: \(upgraded) (usage must carry over: 5 - 3 = 2)")
    }

    static func concurrencySlots(clock: ManualClock, store: any RateLimitStore) async throws {
        let limits = LimitSet(requests: .perMinute(100), concurrency: .concurrent(2))
        let k = key("slots", scope: "music-generation/Music-2.0")
        let ttl = 60 * second
        let a = try await store.acquire(AdmissionRequest(key: k, limits: limits, leaseTTL: ttl))
        let b = try await store.acquire(AdmissionRequest(key: k, limits: limits, leaseTTL: ttl))
        try require(a.isAllowed && b.isAllowed && b.limits.concurrency?.remaining == 0, "two slots must be taken")
        let c = try await store.acquire(AdmissionRequest(key: k, limits: limits, leaseTTL: ttl))
        try require(!c.isAllowed && c.reason == .concurrency, "the third call must wait for a slot")
        guard let lease = a.lease else { throw ConformanceFailure(message: "an allowed call with a TTL got no lease", line: #line) }
        let settled = try await store.settle(lease.id, actualUnits: 0)
        try require(settled.limits.concurrency?.remaining == 1, "settle must free the slot: \(settled.limits)")
        let d = try await store.acquire(AdmissionRequest(key: k, limits: limits, leaseTTL: ttl))
        try require(d.isAllowed, "a freed slot must be taken by the next call")
    }

    static func leaseExpiry(clock: ManualClock, store: any RateLimitStore) async throws {
        let limits = LimitSet(concurrency: .concurrent(1))
        let k = key("expiry", scope: "music-generation/Music-2.0")
        let ttl = 10 * second
        let first = try await store.acquire(AdmissionRequest(key: k, limits: limits, leaseTTL: ttl))
        guard let lease = first.lease else { throw ConformanceFailure(message: "no lease", line: #line) }
        try require(lease.expiresAt == clock.now() + ttl, "expiresAt must be now + TTL")
        clock.advance(by: ttl - 1)
        let early = try await store.acquire(AdmissionRequest(key: k, limits: limits, leaseTTL: ttl))
        try require(!early.isAllowed, "1 ns before the TTL the slot is still held")
        clock.advance(by: 1)
        let onTime = try await store.acquire(AdmissionRequest(key: k, limits: limits, leaseTTL: ttl))
        try require(onTime.isAllowed, "at the TTL the slot must be free")
    }

    static func settleRefund(clock: ManualClock, store: any RateLimitStore) async throws {
        for algorithm in Algorithm.allCases {
            let limits = LimitSet(tokens: Limit(algorithm: algorithm, limit: 1_000, window: 60 * second))
            let k = key("refund-\(algorithm)")
            let decision = try await store.acquire(AdmissionRequest(key: k, limits: limits, units: 800, leaseTTL: 60 * second))
            guard let lease = decision.lease else { throw ConformanceFailure(message: "no lease", line: #line) }
            try require(decision.limits.tokens?.remaining == 200 && lease.reservedUnits == 800, "reserve 800: \(decision)")
            let settled = try await store.settle(lease.id, actualUnits: 300)
            try require(settled.refunded == 500 && settled.charged == 0 && settled.limits.tokens?.remaining == 700,
                        "\(algorithm): settling 300 of 800 must give back 500: \(settled)")
            try require(settled.limitSet == limits, "a settlement must carry the limits its lease was taken under")
        }
    }

    static func settleExtraCharge(clock: ManualClock, store: any RateLimitStore) async throws {
        for algorithm in Algorithm.allCases {
            let limits = LimitSet(tokens: Limit(algorithm: algorithm, limit: 1_000, window: 60 * second))
            let k = key("charge-\(algorithm)")
            let small = try await store.acquire(AdmissionRequest(key: k, limits: limits, units: 100, leaseTTL: 60 * second))
            let settled = try await store.settle(small.lease!.id, actualUnits: 400)
            try require(settled.charged == 300 && settled.limits.tokens?.remaining == 600,
                        "\(algorithm): settling 400 of 100 must charge 300: \(settled)")
            let big = try await store.acquire(AdmissionRequest(key: k, limits: limits, units: 600, leaseTTL: 60 * second))
            _ = try await store.settle(big.lease!.id, actualUnits: 1_500)
            let next = try await store.acquire(AdmissionRequest(key: k, limits: limits, units: 1))
            try require(!next.isAllowed && next.reason == .tokens && next.limits.tokens?.remaining == 0,
                        "\(algorithm): a budget in debt must refuse even one token: \(next)")
        }
    }

    static func settleErrors(clock: ManualClock, store: any RateLimitStore) async throws {
        let limits = LimitSet(requests: .perMinute(10), concurrency: .concurrent(5))
        let k = key("errors")
        let decision = try await store.acquire(AdmissionRequest(key: k, limits: limits, leaseTTL: 30 * second))
        guard let lease = decision.lease else { throw ConformanceFailure(message: "no lease", line: #line) }
        _ = try await store.settle(lease.id, actualUnits: 0)
        try await expectLeaseError(.alreadySettled(lease.id)) { _ = try await store.settle(lease.id, actualUnits: 0) }

        let forged = LeaseID(rawValue: lease.id.rawValue ^ 0xFFFF_0000_0000_0000)
        try await expectLeaseError(.unknown(forged)) { _ = try await store.settle(forged, actualUnits: 0) }

        let late = try await store.acquire(AdmissionRequest(key: k, limits: limits, leaseTTL: 30 * second))
        clock.advance(by: 30 * second)
        try await expectLeaseError(.expired(late.lease!.id)) { _ = try await store.settle(late.lease!.id, actualUnits: 0) }
    }

    static func expectLeaseError(_ expected: LeaseError, _ body: () async throws -> Void, line: Int = #line) async throws {
        do {
            try await body()
        } catch let error as LeaseError {
            try require(error == expected, "expected \(expected), got \(error)", line: line)
            return
        }
        throw ConformanceFailure(message: "expected \(expected), but the settlement succeeded", line: line)
    }

    static func shadowMode(clock: ManualClock, store: any RateLimitStore) async throws {
        var limits = LimitSet(requests: .perMinute(1), tokens: .perMinute(50), concurrency: .concurrent(1))
        limits.shadow = true
        let k = key("shadow")
        let first = try await store.acquire(AdmissionRequest(key: k, limits: limits, units: 10, leaseTTL: 60 * second))
        try require(first.isAllowed && !first.isShadowed && first.reason == nil, "the first call fits for real")
        let second = try await store.acquire(AdmissionRequest(key: k, limits: limits, units: 10, leaseTTL: 60 * second))
        try require(second.isAllowed && second.isShadowed && second.reason == .requests && second.retryAfter != nil,
                    "an over-limit call in shadow mode is allowed, marked shadowed, with its reason: \(second)")
        try require(second.lease != nil && second.lease?.holdsSlot == false && second.lease?.reservedUnits == 0,
                    "a shadowed lease reserves nothing")
        let status = try await store.status(of: k, limits: limits)
        try require(status.requests?.remaining == 0 && status.tokens?.remaining == 40 && status.concurrency?.remaining == 0,
                    "a shadowed call consumed: \(status)")
        let settled = try await store.settle(second.lease!.id, actualUnits: 30)
        try require(settled.charged == 0 && settled.limits.tokens?.remaining == 40, "a shadowed lease charges nothing")
    }

    static func isolation(clock: ManualClock, store: any RateLimitStore) async throws {
        let limits = LimitSet(requests: .perMinute(3))
        for _ in 0..<3 { _ = try await store.acquire(AdmissionRequest(key: key("alice"), limits: limits)) }
        let alice = try await store.acquire(AdmissionRequest(key: key("alice"), limits: limits))
        let bob = try await store.acquire(AdmissionRequest(key: key("bob"), limits: limits))
        let otherModel = try await store.acquire(AdmissionRequest(key: key("alice", scope: "text/MiniMax-M2-Stable"), limits: limits))
        try require(!alice.isAllowed && bob.isAllowed && otherModel.isAllowed,
                    "alice's budget leaked: alice \(alice.isAllowed), bob \(bob.isAllowed), other model \(otherModel.isAllowed)")
    }

    static func concurrentCallers(clock: ManualClock, store: any RateLimitStore) async throws {
        for algorithm in Algorithm.allCases {
            let limits = LimitSet(
                requests: Limit(algorithm: algorithm, limit: 20, window: 60 * second),
                tokens: Limit(algorithm: algorithm, limit: 10_000, window: 60 * second))
            let k = key("crowd-\(algorithm)")
            let admitted = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<64 {
                    group.addTask {
                        var count = 0
                        for _ in 0..<8 where try await store.acquire(AdmissionRequest(key: k, limits: limits, units: 7)).isAllowed {
                            count += 1
                        }
                        return count
                    }
                }
                return try await group.reduce(0, +)
            }
            try require(admitted == 20, "\(algorithm): 64 tasks x 8 calls admitted \(admitted), not exactly 20")
            let status = try await store.status(of: k, limits: limits)
            try require(status.tokens?.remaining == 10_000 - 140, "\(algorithm): tokens consumed by denied calls: \(status)")
        }
    }
}
