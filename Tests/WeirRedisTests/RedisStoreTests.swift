import NIOCore
import Testing
import WeirConformance
import WeirCore
@testable import WeirRedis
import WeirRedisTesting

@Suite("RedisStore against a real redis-server")
struct RedisStoreTests {
    /// A store on `client` with its own key prefix, driven by `clock`. The grace is long
    /// because key expiry runs on Redis's clock while the decisions run on the manual one.
    static func store(_ client: RedisClient, clock: ManualClock, prefix: String = "t\(UInt32.random(in: 0...UInt32.max)):") -> RedisStore {
        RedisStore(client: client, keyPrefix: prefix, clock: clock, idleGraceMilliseconds: 3_600_000)
    }

    @Test("passes the store conformance suite")
    func conformance() async throws {
        try await withRedisServer { server in
            let client = server.client(connections: 2)
            defer { Task { await client.close() } }
            for check in StoreConformance.checks {
                do {
                    try await check.run { clock in Self.store(client, clock: clock) }
                } catch {
                    Issue.record("\(check.name): \(error)")
                }
            }
        }
    }

    @Test("keys share one hash tag per limit key, carry the prefix and expire when idle")
    func keys() async throws {
        try await withRedisServer { server in
            let client = server.client()
            defer { Task { await client.close() } }
            let clock = ManualClock(start: 1_000 * Nanoseconds.perSecond)
            let store = RedisStore(client: client, keyPrefix: "dep1:", clock: clock, idleGraceMilliseconds: 1_000)
            let key = LimitKey(account: "a|b{c}%", scope: "text/MiniMax-M2")
            let limits = LimitSet(
                requests: .perMinute(10), tokens: Limit(algorithm: .gcra, limit: 100, window: 60 * Nanoseconds.perSecond),
                concurrency: .concurrent(2))
            let decision = try await store.acquire(AdmissionRequest(key: key, limits: limits, units: 5, leaseTTL: 30 * Nanoseconds.perSecond))
            #expect(decision.isAllowed)
            guard case .array(let names?) = try await client.command("KEYS", "*") else {
                Issue.record("KEYS gave no array")
                return
            }
            let keys = names.compactMap(\.string).sorted()
            let tag = "{a%7Cb%7Bc%7D%25|text/MiniMax-M2}"
            #expect(keys.allSatisfy { $0.hasPrefix("dep1:") })
            #expect(keys.filter { !$0.contains("{lease:") }.allSatisfy { $0.hasPrefix("dep1:" + tag) }, "\(keys)")
            #expect(keys.count == 5, "state, requests log, slots, lease record, lease index: \(keys)")
            for name in keys {
                guard case .integer(let ttl) = try await client.command("PTTL", name) else { continue }
                #expect(ttl > 0 && ttl <= 60_000 + 2_000 + 1_000, "\(name) expires when idle, got \(ttl) ms")
            }
            let settled = try await store.settle(decision.lease!.id, actualUnits: 5)
            #expect(settled.key == key)
            let other = RedisStore(client: client, keyPrefix: "dep2:", clock: clock)
            let fresh = try await other.status(of: key, limits: limits)
            #expect(fresh.requests?.remaining == 10, "another prefix is another deployment")
        }
    }

    @Test("with Redis's clock, TTLs reach the idle moment plus the grace, only grow, and every key has one")
    func expiryOnRedisClock() async throws {
        try await withRedisServer { server in
            let client = server.client()
            defer { Task { await client.close() } }
            // A grace of 30 s keeps every key alive across the test's calls on a slow machine
            // (with 1 s, a pause of a second between two calls let the state hash expire).
            let grace: Int64 = 30_000
            let store = RedisStore(client: client, keyPrefix: "ttl:", idleGraceMilliseconds: UInt64(grace))
            let minute = 60 * Nanoseconds.perSecond
            let limits = LimitSet(
                requests: Limit(algorithm: .gcra, limit: 6_000, window: minute),
                tokens: Limit(algorithm: .gcra, limit: 1_000_000, window: minute))
            let key = LimitKey(account: "a", scope: "s")
            let state = "ttl:{a|s}"
            func pttl(_ name: String) async throws -> Int64 {
                guard case .integer(let ttl) = try await client.command("PTTL", name) else { return -3 }
                return ttl
            }
            /// The state hash's field x, the moment (Redis ms) its TTL runs to by PTTL and
            /// Redis's TIME read back to back, and its latest TAT in ms (rounded up).
            func expiry() async throws -> (x: Int64, deadline: Int64, tat: Int64) {
                let replies = try await client.pipeline([["HMGET", state, "x", "rtat", "ttat"], ["TIME"], ["PTTL", state]])
                guard case .array(let fields?) = replies[0], case .array(let time?) = replies[1],
                      case .integer(let ttl) = replies[2], let x = fields[0].string.flatMap({ Int64($0) }),
                      let seconds = time[0].string.flatMap({ Int64($0) }), let micros = time[1].string.flatMap({ Int64($0) })
                else { throw StoreError("unexpected replies \(replies)", isTransient: false) }
                let tat = fields[1...].compactMap { $0.string.flatMap { UInt64($0) } }.max() ?? 0
                return (x, seconds * 1_000 + micros / 1_000 + ttl, Int64((tat + 999_999) / 1_000_000))
            }
            // A new state hash: its TTL reaches the idle moment (the latest TAT) plus one
            // grace, set one grace further; field x is exactly that deadline.
            #expect(try await store.acquire(AdmissionRequest(key: key, limits: limits, units: 100)).isAllowed)
            let first = try await expiry()
            #expect(abs(first.deadline - first.x) <= 5, "x is the TTL's deadline: \(first)")
            #expect(first.x >= first.tat + grace - 1 && first.x <= first.tat + 2 * grace + 1, "\(first)")
            // 5 x 100,000 tokens put the tokens TAT 30 s ahead: the TTL grows past it.
            for _ in 0..<5 { #expect(try await store.acquire(AdmissionRequest(key: key, limits: limits, units: 100_000)).isAllowed) }
            let grown = try await expiry()
            #expect(grown.tat >= first.tat + 29_000, "\(grown)")
            #expect(abs(grown.deadline - grown.x) <= 5 && grown.x >= grown.tat + grace - 1 && grown.x <= grown.tat + 2 * grace + 1, "\(grown)")
            // A call that needs less leaves the TTL (and x) as they are: never shortened.
            #expect(try await store.acquire(AdmissionRequest(key: key, limits: limits, units: 1)).isAllowed)
            let after = try await expiry()
            #expect(after.x == grown.x && abs(after.deadline - grown.deadline) <= 5, "\(after) after \(grown)")
            // The general code's keys (sliding-window logs, slots, lease records) all carry a TTL too.
            let other = LimitSet(
                requests: .perMinute(10), tokens: Limit(algorithm: .slidingWindow, limit: 1_000, window: minute),
                concurrency: .concurrent(2))
            let leased = try await store.acquire(AdmissionRequest(
                key: LimitKey(account: "b", scope: "s"), limits: other, units: 10, leaseTTL: 30 * Nanoseconds.perSecond))
            #expect(leased.isAllowed)
            _ = try await store.settle(leased.lease!.id, actualUnits: 20)
            guard case .array(let names?) = try await client.command("KEYS", "ttl:*") else {
                Issue.record("KEYS gave no array")
                return
            }
            // The settle freed the only slot, so the slots hash is gone.
            #expect(names.count == 6, "two state hashes, two logs, a lease record and its index: \(names)")
            for name in names.compactMap(\.string) {
                let ttl = try await pttl(name)
                #expect(ttl > 0, "\(name) has a TTL, got \(ttl)")
            }
        }
    }

    @Test("loads its function library again after FUNCTION FLUSH")
    func noscript() async throws {
        try await withRedisServer { server in
            let client = server.client()
            defer { Task { await client.close() } }
            let clock = ManualClock(start: 1_000 * Nanoseconds.perSecond)
            let store = Self.store(client, clock: clock)
            let key = LimitKey(account: "n", scope: "s")
            let limits = LimitSet(requests: .perMinute(3))
            #expect(try await store.acquire(AdmissionRequest(key: key, limits: limits)).isAllowed)
            try await client.command("FUNCTION", "FLUSH")
            let leased = try await store.acquire(AdmissionRequest(key: key, limits: limits, leaseTTL: Nanoseconds.perSecond))
            #expect(leased.limits.requests?.remaining == 1)
            try await client.command("FUNCTION", "FLUSH")
            let lease = try #require(leased.lease)
            #expect(try await store.settle(lease.id, actualUnits: 0).limits.requests?.remaining == 1)
            try await client.command("FUNCTION", "FLUSH")
            #expect(try await store.status(of: key, limits: limits).requests?.remaining == 1)
            // One library, named by the source's digest: another version's stays beside it.
            guard case .array(let libraries?) = try await client.command("FUNCTION", "LIST", "LIBRARYNAME", "weir_*") else {
                Issue.record("FUNCTION LIST gave no array")
                return
            }
            #expect(libraries.count == 1)
        }
    }

    @Test("with Redis's clock, a busy key's TTL is set once per grace, never short")
    func ttlDeadline() async throws {
        try await withRedisServer { server in
            let client = server.client()
            defer { Task { await client.close() } }
            func redisMilliseconds() async throws -> UInt64 {
                guard case .array(let time?) = try await client.command("TIME"), time.count == 2,
                      let seconds = UInt64(time[0].string ?? ""), let micros = UInt64(time[1].string ?? "")
                else { throw StoreError("TIME gave no time", isTransient: false) }
                return seconds * 1_000 + micros / 1_000
            }
            let store = RedisStore(client: client, keyPrefix: "x:", idleGraceMilliseconds: 600_000)
            let key = LimitKey(account: "x", scope: "s")
            let limits = LimitSet(requests: Limit(algorithm: .gcra, limit: 1_000, window: 60 * Nanoseconds.perSecond))
            let before = try await redisMilliseconds()
            #expect(try await store.acquire(AdmissionRequest(key: key, limits: limits)).isAllowed)
            let state = "x:{x|s}"
            let deadline = try #require(UInt64(try await client.command("HGET", state, "x").string ?? ""))
            let ttl = try #require(UInt64(try await client.command("PTTL", state).string ?? ""))
            let after = try await redisMilliseconds()
            // The need (60 ms of debt plus one grace) and one grace more, from the call's moment.
            #expect(deadline >= before + 1_200_060 && deadline <= after + 1_200_060, "deadline \(deadline), \(before)...\(after)")
            // The real TTL reaches the deadline (PTTL rounds down to the ms).
            #expect(ttl + after + 1 >= deadline)
            // The next calls need less than the deadline covers: no new deadline, no PEXPIRE.
            for _ in 0..<5 { #expect(try await store.acquire(AdmissionRequest(key: key, limits: limits)).isAllowed) }
            #expect(UInt64(try await client.command("HGET", state, "x").string ?? "") == deadline)
        }
    }

    @Test("uses Redis's clock (TIME) when no clock is given")
    func redisTime() async throws {
        try await withRedisServer { server in
            let client = server.client()
            defer { Task { await client.close() } }
            let store = RedisStore(client: client, keyPrefix: "time:")
            let key = LimitKey(account: "t", scope: "s")
            let limits = LimitSet(requests: Limit(algorithm: .slidingWindow, limit: 2, window: 3_600 * Nanoseconds.perSecond))
            #expect(try await store.acquire(AdmissionRequest(key: key, limits: limits)).isAllowed)
            #expect(try await store.acquire(AdmissionRequest(key: key, limits: limits)).isAllowed)
            let denied = try await store.acquire(AdmissionRequest(key: key, limits: limits, leaseTTL: 1_000))
            #expect(!denied.isAllowed && denied.reason == .requests)
            let retry = try #require(denied.retryAfter)
            #expect(retry > 3_500 * Nanoseconds.perSecond && retry <= 3_600 * Nanoseconds.perSecond)
            // Unix time in nanoseconds is above 2^53: a lease's expiry must still be exact to the ns.
            let leased = try await store.acquire(AdmissionRequest(
                key: LimitKey(account: "t2", scope: "s"), limits: limits, leaseTTL: 1))
            let expiry = try #require(leased.lease?.expiresAt)
            #expect(expiry > 1 << 53 && expiry % 1_000 == 1, "TIME is in microseconds; +1 ns of TTL shows")
        }
    }
}
