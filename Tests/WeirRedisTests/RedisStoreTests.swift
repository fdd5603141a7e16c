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

    @Test("reloads its scripts after SCRIPT FLUSH (NOSCRIPT)")
    func noscript() async throws {
        try await withRedisServer { server in
            let client = server.client()
            defer { Task { await client.close() } }
            let clock = ManualClock(start: 1_000 * Nanoseconds.perSecond)
            let store = Self.store(client, clock: clock)
            let key = LimitKey(account: "n", scope: "s")
            let limits = LimitSet(requests: .perMinute(3))
            #expect(try await store.acquire(AdmissionRequest(key: key, limits: limits)).isAllowed)
            try await client.command("SCRIPT", "FLUSH")
            #expect(try await store.acquire(AdmissionRequest(key: key, limits: limits)).limits.requests?.remaining == 1)
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
