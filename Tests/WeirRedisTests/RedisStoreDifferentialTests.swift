import Testing
import WeirConformance
import WeirCore
@testable import WeirRedis
import WeirRedisTesting

/// The Lua scripts against the Swift algorithms: the same random timelines through an
/// `InMemoryStore` and a `RedisStore`, each on its own manual clock set to the same
/// times, must give the same decisions, settlements and statuses, field by field
/// (lease ids aside: each store makes its own).
@Suite("RedisStore matches InMemoryStore")
struct RedisStoreDifferentialTests {
    /// Limits from small to the largest Weir accepts in practice, with windows from
    /// 1 ns to a day, so the scripts' split arithmetic meets 128-bit products.
    static func randomLimits(_ random: inout SeededGenerator) -> LimitSet {
        func limit() -> Limit {
            let algorithm: Algorithm = Bool.random(using: &random) ? .gcra : .slidingWindow
            let value = [1, 3, 7, 20, 500, 20_000_000, 1_000_000_000_000][Int.random(in: 0..<7, using: &random)]
            let window = [1, 999, 1_000_000_007, 60 * Nanoseconds.perSecond, 86_400 * Nanoseconds.perSecond][
                Int.random(in: 0..<5, using: &random)]
            let burst: UInt64? = Bool.random(using: &random) ? UInt64(value) * UInt64.random(in: 1...3, using: &random) : nil
            return Limit(algorithm: algorithm, limit: UInt64(value), window: window, burst: burst)
        }
        return LimitSet(
            requests: Int.random(in: 0..<4, using: &random) == 0 ? nil : limit(),
            tokens: Int.random(in: 0..<4, using: &random) == 0 ? nil : limit(),
            concurrency: Bool.random(using: &random) ? .concurrent(UInt64.random(in: 1...3, using: &random)) : nil,
            shadow: Int.random(in: 0..<8, using: &random) == 0)
    }

    static func same(_ lhs: Decision, _ rhs: Decision) -> Bool {
        var left = lhs
        var right = rhs
        left.lease?.id = LeaseID(rawValue: 0)
        right.lease?.id = LeaseID(rawValue: 0)
        return left == right
    }

    /// Limits that push the scripts off their fast path (doubles below 2^53) into
    /// the exact limbs: limits, bursts and windows around and far above 2^53, up to
    /// 2^64 - 1, mixed with small ones so that calls are still denied.
    static func largeLimits(_ random: inout SeededGenerator) -> LimitSet {
        func limit() -> Limit {
            let algorithm: Algorithm = Bool.random(using: &random) ? .gcra : .slidingWindow
            let values: [UInt64] = [1, 3, 1_000, 999_999_999_999_989, 1 << 53 + 1, 4_000_000_000_000_003, 1_000_000_000_000_000_007, UInt64.max / 3, UInt64.max]
            let windows: [UInt64] = [1, 999, 60 * Nanoseconds.perSecond, 1_000_000_000_000_037, 1 << 53 - 1, 1_000_000_000_000_000_003, UInt64.max / 2, UInt64.max]
            // A sliding-window log's total saturates at 2^64 - 1 (charges at settle may
            // exceed the limit), and `SlidingWindowLog.prune` then subtracts exactly: keep
            // those limits below 2^60 so totals stay exact in both stores.
            let choices = algorithm == .gcra ? values : values.filter { $0 < 1 << 60 }
            let value = choices[Int.random(in: 0..<choices.count, using: &random)]
            let window = windows[Int.random(in: 0..<windows.count, using: &random)]
            let factor = UInt64.random(in: 1...3, using: &random)
            let (product, overflow) = value.multipliedReportingOverflow(by: factor)
            let burst: UInt64? = Bool.random(using: &random) ? (overflow ? UInt64.max : product) : nil
            return Limit(algorithm: algorithm, limit: value, window: window, burst: burst)
        }
        return LimitSet(
            requests: Int.random(in: 0..<4, using: &random) == 0 ? nil : limit(),
            tokens: Int.random(in: 0..<4, using: &random) == 0 ? nil : limit(),
            concurrency: Bool.random(using: &random) ? .concurrent(UInt64.random(in: 1...3, using: &random)) : nil,
            shadow: Int.random(in: 0..<8, using: &random) == 0)
    }

    @Test("random timelines give the same decisions", arguments: [1, 2, 3, 4, 5, 6, 7, 8])
    func timelines(seed: UInt64) async throws {
        try await withRedisServer { server in
            let client = server.client()
            defer { Task { await client.close() } }
            var random = SeededGenerator(seed: seed)
            // Start near today's Unix time in ns (above 2^53), as Redis TIME would give.
            let start: UInt64 = 1_764_000_000 * Nanoseconds.perSecond + UInt64.random(in: 0...999_999_999, using: &random)
            let outcomes = try await Self.compare(
                client: client, prefix: "diff\(seed):", start: start, random: &random, limits: Self.randomLimits)
            // The timelines must reach every kind of outcome, or they compare little.
            #expect(outcomes["allowed", default: 0] > 0 && outcomes["denied requests", default: 0] + outcomes["denied tokens", default: 0] > 0,
                    "seed \(seed): \(outcomes)")
            #expect(outcomes["settled", default: 0] + outcomes["charged", default: 0] + outcomes["refunded", default: 0] > 0, "seed \(seed): \(outcomes)")
        }
    }

    /// Starts near 0 (the scripts' epoch is 0), just below and above 2^53, at Unix time,
    /// and near 2^64 - 1 (where time sums saturate), with large limits and lease TTLs.
    /// The clock only moves forwards here: with jumps this large, leases often expire
    /// between two calls, and after a backwards jump the stores disagree on a lease whose
    /// TTL a later call had already passed (`InMemoryStore` forgets its record at that
    /// call's time; Redis keeps it until the key's PEXPIRE). The first test covers
    /// backwards jumps with ordinary values.
    @Test("large values take the exact slow path and still match", arguments: [11, 12, 13, 14, 15, 16, 17, 18, 19, 20])
    func largeValues(seed: UInt64) async throws {
        try await withRedisServer { server in
            let client = server.client()
            defer { Task { await client.close() } }
            var random = SeededGenerator(seed: seed)
            let starts: [UInt64] = [
                5, 1 << 53 - 7_000, 1 << 53 + 999_999_999, 1_764_000_000 * Nanoseconds.perSecond + 123_456_789,
                UInt64.max - 3_000_000_000_000_000, UInt64.max - 86_400 * Nanoseconds.perSecond,
            ]
            let start = starts[Int(seed) % starts.count] + UInt64.random(in: 0...999, using: &random)
            let outcomes = try await Self.compare(
                client: client, prefix: "large\(seed):", start: start, random: &random, limits: Self.largeLimits, hugeTTLs: true,
                backwards: false)
            #expect(outcomes["allowed", default: 0] > 0, "seed \(seed): \(outcomes)")
        }
    }

    /// Batches: many acquires sent as one script call (the batch `RedisStore` makes of
    /// concurrent callers) must decide as the same acquires one after another at the same
    /// moment. A batch mixes keys that repeat, GCRA and sliding-window limits, leases and
    /// concurrency slots, so fast and general paths alternate within one script run.
    @Test("a batch of acquires decides as the same acquires one by one", arguments: [31, 32, 33, 34])
    func batches(seed: UInt64) async throws {
        try await withRedisServer { server in
            let client = server.client()
            defer { Task { await client.close() } }
            var random = SeededGenerator(seed: seed)
            let start: UInt64 = 1_764_000_000 * Nanoseconds.perSecond + UInt64.random(in: 0...999_999_999, using: &random)
            let swiftClock = ManualClock(start: start)
            let redisClock = ManualClock(start: start)
            let reference = InMemoryStore(clock: swiftClock)
            let store = RedisStore(client: client, keyPrefix: "batch\(seed):", clock: redisClock, idleGraceMilliseconds: 3_600_000)
            let keys = (0..<4).map { LimitKey(account: "acct\($0 % 2)", scope: "scope\($0)") }
            let limits = keys.map { _ in Self.randomLimits(&random) }
            var outcomes: [String: Int] = [:]
            for round in 0..<12 {
                var requests: [AdmissionRequest] = []
                for _ in 0..<Int.random(in: 1...48, using: &random) {
                    let pick = Int.random(in: 0..<keys.count, using: &random)
                    let tokens = limits[pick].tokens.map { max($0.limit, $0.burst) } ?? 10
                    let ttl: UInt64? = Bool.random(using: &random) ? UInt64.random(in: 1...(120 * Nanoseconds.perSecond), using: &random) : nil
                    requests.append(AdmissionRequest(
                        key: keys[pick], limits: limits[pick], units: UInt64.random(in: 0...max(1, tokens / 4), using: &random),
                        leaseTTL: ttl))
                }
                let expected = requests.map { reference.acquire($0) }
                let calls = requests.map { store.acquireCall($0) }
                let replies = await store.acquireBatch(calls.map(\.0))
                #expect(replies.count == requests.count)
                for (index, (reply, call)) in zip(replies, calls).enumerated() {
                    let actual = try RedisStore.decision(try reply.get(), lease: call.1, limits: requests[index].limits)
                    #expect(Self.same(expected[index], actual), "seed \(seed) round \(round) call \(index): \(requests[index])\nswift \(expected[index])\nredis \(actual)")
                    outcomes[actual.reason.map { "denied \($0)" } ?? "allowed", default: 0] += 1
                }
                let next = swiftClock.now() + UInt64.random(in: 0...(20 * Nanoseconds.perSecond), using: &random)
                swiftClock.set(to: next)
                redisClock.set(to: next)
            }
            #expect(outcomes["allowed", default: 0] > 0 && outcomes.count > 1, "seed \(seed): \(outcomes)")
        }
    }

    /// A call that raises an error inside a batch (its state key holds another type)
    /// answers with that error alone; the calls around it are decided as without it.
    @Test("an error in one call of a batch fails that call only")
    func errorInBatch() async throws {
        try await withRedisServer { server in
            let client = server.client()
            defer { Task { await client.close() } }
            let clock = ManualClock(start: 1_764_000_000 * Nanoseconds.perSecond)
            let store = RedisStore(client: client, keyPrefix: "err:", clock: clock)
            let limits = LimitSet(requests: .perMinute(10))
            let good = LimitKey(account: "good", scope: "s")
            let bad = LimitKey(account: "bad", scope: "s")
            try await client.command("SET", "err:{" + RedisStore.tag(bad) + "}", "not a hash")
            let requests = [good, bad, good, bad, good].map { AdmissionRequest(key: $0, limits: limits) }
            let calls = requests.map { store.acquireCall($0) }
            let replies = await store.acquireBatch(calls.map(\.0))
            var remaining: [UInt64] = []
            for (index, reply) in replies.enumerated() {
                switch reply {
                case .success(let values):
                    #expect(index % 2 == 0, "call \(index) on the bad key succeeded")
                    remaining.append(try #require(try RedisStore.decision(values, lease: nil, limits: limits).limits.requests?.remaining))
                case .failure(let error):
                    #expect(index % 2 == 1, "call \(index) on the good key failed: \(error)")
                    #expect("\(error)".contains("WRONGTYPE"), "\(error)")
                }
            }
            #expect(remaining == [9, 8, 7])
        }
    }

    /// Runs eight rounds of eighty random steps (acquire, settle, status, clock moves
    /// forwards and backwards) through both stores and compares every answer; returns
    /// how often each outcome occurred.
    static func compare(
        client: RedisClient, prefix: String, start: UInt64, random: inout SeededGenerator,
        limits makeLimits: (inout SeededGenerator) -> LimitSet, hugeTTLs: Bool = false, backwards: Bool = true
    ) async throws -> [String: Int] {
        let seed = prefix
        let swiftClock = ManualClock(start: start)
        let redisClock = ManualClock(start: start)
        let reference = InMemoryStore(clock: swiftClock)
        let store = RedisStore(client: client, keyPrefix: prefix, clock: redisClock, idleGraceMilliseconds: 3_600_000)
        var outcomes: [String: Int] = [:]
        func plus(_ a: UInt64, _ b: UInt64) -> UInt64 {
            let (sum, overflow) = a.addingReportingOverflow(b)
            return overflow ? UInt64.max : sum
        }
        for round in 0..<8 {
            let limits = makeLimits(&random)
            let key = LimitKey(account: "acct\(round % 3)", scope: "scope\(round)")
            var leases: [(swift: LeaseID, redis: LeaseID, expiresAt: UInt64)] = []
            for step in 0..<80 {
                let now = swiftClock.now()
                switch Int.random(in: 0..<10, using: &random) {
                case 0..<6:
                    let tokens = limits.tokens.map { max($0.limit, $0.burst) } ?? 10
                    let units = Int.random(in: 0..<8, using: &random) == 0
                        ? plus(tokens, UInt64.random(in: 0...1, using: &random))
                        : UInt64.random(in: 0...max(1, tokens / 3), using: &random)
                    let ttl: UInt64? = Bool.random(using: &random)
                        ? (hugeTTLs && Bool.random(using: &random)
                            ? UInt64.random(in: 1...UInt64.max, using: &random)
                            : UInt64.random(in: 1...(120 * Nanoseconds.perSecond), using: &random))
                        : nil
                    let request = AdmissionRequest(key: key, limits: limits, units: units, leaseTTL: ttl)
                    let expected = reference.acquire(request)
                    let actual = try await store.acquire(request)
                    #expect(Self.same(expected, actual), "seed \(seed) round \(round) step \(step) at \(now): \(limits) \(request)\nswift \(expected)\nredis \(actual)")
                    if let left = expected.lease, let right = actual.lease { leases.append((left.id, right.id, left.expiresAt)) }
                    outcomes[expected.reason.map { "denied \($0)" } ?? "allowed", default: 0] += 1
                case 6..<8 where !leases.isEmpty:
                    let pick = leases.remove(at: Int.random(in: 0..<leases.count, using: &random))
                    let units = UInt64.random(in: 0...(limits.tokens?.limit ?? 10) / 2, using: &random)
                    let expected: Result<Settlement, LeaseError>
                    do {
                        expected = .success(try reference.settle(pick.swift, actualUnits: units))
                    } catch {
                        expected = .failure(error)
                    }
                    var actual: Result<Settlement, LeaseError>
                    do {
                        actual = .success(try await store.settle(pick.redis, actualUnits: units))
                    } catch let error as LeaseError {
                        actual = .failure(error)
                    }
                    switch (expected, actual) {
                    case (.success(let left), .success(let right)):
                        outcomes[left.charged > 0 ? "charged" : left.refunded > 0 ? "refunded" : "settled", default: 0] += 1
                        #expect(left == right, "seed \(seed) round \(round) step \(step): settle\nswift \(left)\nredis \(right)")
                    case (.failure(.expired), .failure(.expired)), (.failure(.alreadySettled), .failure(.alreadySettled)):
                        outcomes["settle refused", default: 0] += 1
                    default:
                        Issue.record("seed \(seed) round \(round) step \(step): settle swift \(expected), redis \(actual)")
                    }
                case 8:
                    let expected = reference.status(of: key, limits: limits)
                    let actual = try await store.status(of: key, limits: limits)
                    #expect(expected == actual, "seed \(seed) round \(round) step \(step): status\nswift \(expected)\nredis \(actual)")
                default:
                    let window = limits.tokens?.window ?? limits.requests?.window ?? Nanoseconds.perSecond
                    let next: UInt64 = Int.random(in: 0..<10, using: &random) == 0 && backwards
                        ? now - min(now, UInt64.random(in: 0...min(window, Nanoseconds.perSecond), using: &random))
                        : plus(now, UInt64.random(in: 0...max(1, window / 4), using: &random))
                    swiftClock.set(to: next)
                    redisClock.set(to: next)
                }
            }
        }
        return outcomes
    }
}
