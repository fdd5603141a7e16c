import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import Testing
import WeirRedisTesting

/// Several `weir serve` processes on one real Redis (`--store redis://`): one limit
/// across instances, the registry shared, Redis killed and brought back.
@Suite("weir serve on Redis", .serialized, .timeLimit(.minutes(3)))
struct ServeOnRedisTests {
    static let token = "redis-admin-token"

    /// Where the instances' Redis runs: one server, or a three-master Redis Cluster (the
    /// instances are given one node; the client finds the others).
    enum Topology: String, CustomStringConvertible, CaseIterable {
        case standalone, cluster
        var description: String { rawValue }
    }

    /// Runs `body` with a fresh Redis of `topology`; `body` gets a seed server.
    static func withRedis(_ topology: Topology, _ body: (RedisServerProcess) async throws -> Void) async throws {
        switch topology {
        case .standalone:
            let redis = try await RedisServerProcess()
            defer { redis.stop() }
            try await body(redis)
        case .cluster:
            try await withRedisCluster { cluster in try await body(cluster.servers[0]) }
        }
    }

    /// Starts `weir serve` on `redis` with the admin token and `extra` arguments.
    static func serve(_ redis: RedisServerProcess, _ extra: [String] = []) throws -> ServerProcess {
        let directory = scratchDirectory()
        let tokenFile = directory + "/admin-token"
        try token.write(toFile: tokenFile, atomically: true, encoding: .utf8)
        return try ServerProcess(arguments: [
            "serve", "--port", "0", "--data", directory + "/registry", "--admin-token-file", tokenFile,
            "--store", "redis://127.0.0.1:\(redis.port)", "--redis-prefix", "t\(UInt32.random(in: 0...UInt32.max)):",
            "--registry-refresh-ms", "100",
        ] + extra)
    }

    /// Waits until `server` logs that decisions go to Redis again and that its registry
    /// answers again too (its own connection reconnects on its own backoff, at most 1 s):
    /// then `/readyz` is ready. Call it after the registry refresh was seen failing.
    static func waitForRecovery(of server: ServerProcess) async throws {
        _ = try await server.waitForOutput("store answers again")
        _ = try await server.waitForOutput("registry refresh works again")
    }

    static func acquire(_ account: String, model: String = "MiniMax-M2") -> String {
        #"{"account": "\#(account)", "api": "text", "model": "\#(model)"}"#
    }

    @Test("three instances, 200 concurrent clients, one account: exactly the limit is admitted across all of them",
          arguments: Topology.allCases)
    func oneLimitAcrossInstances(topology: Topology) async throws {
        try await Self.withRedis(topology) { redis in try await oneLimit(redis) }
    }

    private func oneLimit(_ redis: RedisServerProcess) async throws {
        let prefix = "shared\(UInt32.random(in: 0...UInt32.max)):"
        // A generous command timeout: on this loaded 2-core machine a 50 ms timeout can
        // fire, and then the `local` failure mode (which limits per instance) would decide.
        let instances = try (0..<3).map { _ in try Self.serve(redis, ["--redis-prefix", prefix, "--store-timeout", "5000"]) }
        var clients: [HTTPTestClient] = []
        for instance in instances { clients.append(HTTPTestClient(port: try await instance.port(), adminToken: nil)) }
        #expect(instances[0].output.contains("store: redis://127.0.0.1:\(redis.port)/0 (prefix \(prefix), on-store-failure local)"))

        // The free tier allows 20 MiniMax-M2 requests per minute; the whole run takes far
        // less than a minute, so every window containing it may admit at most 20.
        let statuses = Locked<[UInt: Int]>([:])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<200 {
                let client = clients[index % 3]
                group.addTask {
                    for _ in 0..<3 {
                        let answer = try await client.send(.POST, "/v1/acquire", Self.acquire("hammered"))
                        statuses.value.withLock { $0[answer.status, default: 0] += 1 }
                    }
                }
            }
            try await group.waitForAll()
        }
        let counts = statuses.value.withLock { $0 }
        #expect(counts[200] == 20, "exactly the limit, across three instances: \(counts)")
        #expect(counts[429] == 580, "every other call denied, none failed: \(counts)")
        // The denial cache answered some of the denials without a round trip, and
        // changed no outcome (the counts above).
        for client in clients {
            let metrics = try await client.send(.GET, "/metrics").body
            #expect(metrics.contains("weir_denial_cache_hits_total"))
            #expect(metrics.contains("weir_store_fallback_decisions_total 0"), "Redis decided every call")
        }
        for instance in instances { instance.signal(SIGTERM) }
        for instance in instances { #expect(await instance.exitStatus() == 0) }
    }

    @Test("a key and a recharge made through one instance are honoured by another within a second",
          arguments: Topology.allCases)
    func registrySharedAcrossInstances(topology: Topology) async throws {
        try await Self.withRedis(topology) { redis in try await sharedRegistry(redis) }
    }

    private func sharedRegistry(_ redis: RedisServerProcess) async throws {
        let prefix = "reg\(UInt32.random(in: 0...UInt32.max)):"
        let first = try Self.serve(redis, ["--redis-prefix", prefix])
        let second = try Self.serve(redis, ["--redis-prefix", prefix])
        let one = HTTPTestClient(port: try await first.port(), adminToken: Self.token)
        let two = HTTPTestClient(port: try await second.port(), adminToken: Self.token)

        #expect(try await one.send(.PUT, "/admin/v1/accounts/acme", "{}").status == 201)
        let key = try #require(try await one.send(.POST, "/admin/v1/accounts/acme/keys").json["api_key"] as? String)
        let byKey = #"{"api_key": "\#(key)", "api": "text", "model": "MiniMax-M2-Stable"}"#
        let seen = try await afterRefreshes(of: second, within: .seconds(1)) { try await two.send(.POST, "/v1/acquire", byKey).status == 200 }
        #expect(seen, "the second instance accepts the key made through the first")

        let recharged = try await one.send(.POST, "/admin/v1/accounts/acme/recharges", #"{"amount": 10}"#)
        #expect(recharged.json["tier"] as? String == "paid")
        let paid = try await afterRefreshes(of: second, within: .seconds(1)) {
            try await two.send(.POST, "/v1/acquire", byKey).headers.first(name: "x-ratelimit-limit-requests") == "500"
        }
        #expect(paid, "the second instance applies the paid tier")
        #expect(try await two.send(.GET, "/admin/v1/accounts/acme").json["tier"] as? String == "paid")

        // Revoked through the second instance: refused by the first.
        let prefixOfKey = try #require(try await two.send(.GET, "/admin/v1/accounts/acme").json["keys"] as? [[String: Any]]).first?["prefix"] as? String
        #expect(try await two.send(.DELETE, "/admin/v1/keys/\(try #require(prefixOfKey))").status == 200)
        let refused = try await afterRefreshes(of: first, within: .seconds(1)) { try await one.send(.POST, "/v1/acquire", byKey).status == 401 }
        #expect(refused)
        for server in [first, second] { #expect(!server.output.contains(key)) }
    }

    @Test("Redis killed mid-load: no failures, the local mode decides, /readyz degraded; back to Redis when it returns")
    func redisOutageLocalMode() async throws {
        let redis = try await RedisServerProcess()
        defer { redis.stop() }
        let server = try Self.serve(redis, ["--store-timeout", "50"])
        let client = HTTPTestClient(port: try await server.port(), adminToken: nil)
        #expect(try await client.send(.GET, "/readyz").json["status"] as? String == "ready")

        let statuses = Locked<[UInt: Int]>([:])
        let slowest = Locked<Duration>(.zero)
        func load(_ calls: Int) async throws {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<16 {
                    group.addTask {
                        for call in 0..<calls {
                            let started = ContinuousClock.now
                            let answer = try await client.send(.POST, "/v1/acquire", Self.acquire("load\(index)-\(call % 4)"))
                            let took = ContinuousClock.now - started
                            statuses.value.withLock { $0[answer.status, default: 0] += 1 }
                            slowest.value.withLock { $0 = max($0, took) }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        try await load(10)
        redis.kill()
        try await load(10)
        let readiness = try await client.send(.GET, "/readyz")
        #expect(readiness.status == 200)
        #expect(readiness.json["status"] as? String == "degraded")
        #expect(readiness.json["store_state"] as? String == "unreachable")
        let metrics = try await client.send(.GET, "/metrics").body
        #expect(metrics.contains("weir_store_degraded 1"))
        #expect(!metrics.contains("weir_store_outages_total 0"))
        #expect(!metrics.contains("weir_store_fallback_decisions_total 0"))

        _ = try await server.waitForOutput("registry refresh failed")
        try redis.start()
        // No call is made now: the server's background probe finds Redis again by itself
        // (backoff capped at 2 s), and logs it.
        let recovered = try await withDeadline(.seconds(10)) { try await Self.waitForRecovery(of: server) }
        #expect(recovered, "back on Redis by itself")
        #expect(try await client.send(.GET, "/readyz").json["status"] as? String == "ready")
        #expect(server.output.contains("store unreachable: deciding by --on-store-failure local"), "the outage is logged")
        try await load(5)
        let counts = statuses.value.withLock { $0 }
        #expect(Set(counts.keys).isSubset(of: [200, 429]), "never a failure: \(counts)")
        #expect(slowest.value.withLock { $0 } < .seconds(2), "no answer waits seconds")
        server.signal(SIGTERM)
        #expect(await server.exitStatus() == 0)
    }

    @Test("deny mode: 503 with Retry-After while Redis is down, /readyz not ready; ready again by itself when Redis returns, with no call")
    func redisOutageDenyMode() async throws {
        let redis = try await RedisServerProcess()
        defer { redis.stop() }
        let server = try Self.serve(redis, ["--on-store-failure", "deny"])
        let client = HTTPTestClient(port: try await server.port(), adminToken: nil)
        #expect(try await client.send(.POST, "/v1/acquire", Self.acquire("a")).status == 200)
        redis.kill()
        // Seen without traffic: the health check (every second) finds the outage.
        let seen = try await withDeadline(.seconds(10)) { try await server.waitForOutput("store unreachable") }
        #expect(seen, "the outage is seen with no call made")
        let denied = try await client.send(.POST, "/v1/acquire", Self.acquire("a"))
        #expect(denied.status == 503)
        #expect(denied.headers.first(name: "retry-after") == "1")
        #expect((denied.json["error"] as? [String: Any])?["code"] as? String == "store_unavailable")
        #expect(try await client.send(.GET, "/readyz").status == 503)
        // Not ready, so a load balancer sends nothing: recovery must not wait for a call.
        // The background probe finds Redis again, /readyz says so, decisions go to Redis.
        _ = try await server.waitForOutput("registry refresh failed")
        try redis.start()
        let recovered = try await withDeadline(.seconds(10)) { try await Self.waitForRecovery(of: server) }
        #expect(recovered, "back on Redis without a single call")
        let readiness = try await client.send(.GET, "/readyz")
        #expect(readiness.status == 200)
        #expect(readiness.json["status"] as? String == "ready")
        #expect(try await client.send(.GET, "/metrics").body.contains("weir_store_degraded 0"))
        #expect(try await client.send(.POST, "/v1/acquire", Self.acquire("a")).status == 200)
        server.signal(SIGTERM)
        #expect(await server.exitStatus() == 0)
    }

    @Test("the gRPC port on Redis: decided when Redis answers; UNAVAILABLE and NOT_SERVING while it is down under deny; SERVING again by itself")
    func grpcOnRedis() async throws {
        let redis = try await RedisServerProcess()
        defer { redis.stop() }
        let server = try Self.serve(redis, ["--on-store-failure", "deny", "--grpc-port", "0"])
        _ = try await server.port()
        let line = "Envoy rate limit service (gRPC envoy.service.ratelimit.v3) on 127.0.0.1:"
        let output = try await server.waitForOutput(line)
        let grpcPort = try #require(Int(output.components(separatedBy: line)[1].prefix { $0.isNumber }))
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../WeirEnvoyTests/Conformance/rls_call.py").standardized.path
        func call(_ arguments: String...) async throws -> String {
            let run = try await ChildProcess.run("/usr/bin/env", ["python3", script, String(grpcPort)] + arguments)
            guard run.status == 0 else { throw TestFailure("rls_call.py exited \(run.status):\n\(run.error)") }
            return run.output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        // The free tier's 20 requests a minute, counted in Redis.
        for _ in 1...20 { #expect(try await call("should", "grpc-1") == "OK") }
        #expect(try await call("should", "grpc-1") == "OVER_LIMIT")
        #expect(try await call("health") == "0801", "SERVING")
        redis.kill()
        let seen = try await withDeadline(.seconds(10)) { try await server.waitForOutput("store unreachable") }
        #expect(seen)
        #expect(try await call("should", "grpc-2") == "UNAVAILABLE", "Envoy's failure mode decides")
        #expect(try await call("health") == "0802", "NOT_SERVING: every decision would fail")
        _ = try await server.waitForOutput("registry refresh failed")
        try redis.start()
        let recovered = try await withDeadline(.seconds(10)) { try await Self.waitForRecovery(of: server) }
        #expect(recovered)
        #expect(try await call("health") == "0801", "SERVING again, with no call made")
        #expect(try await call("should", "grpc-2") == "OK")
        server.signal(SIGTERM)
        #expect(await server.exitStatus() == 0)
    }

    @Test("a gateway call that ends while Redis is down frees its slot once Redis is back, not at its lease's TTL")
    func gatewaySettlementAfterOutage() async throws {
        let directory = scratchDirectory()
        let redis = try await RedisServerProcess(appendOnlyDirectory: directory)
        defer { redis.stop() }
        let mock = try ServerProcess(arguments: ["mock-upstream", "--port", "0"])
        let config = directory + "/one-slot.yaml"
        try """
            tiers:
              - name: free
                recharge_threshold: 0
            rules:
              - name: text
                api: text
                models: [MiniMax-M2]
                meter: tokens
                limits:
                  all: {requests: 1000, tokens: 100000000, concurrency: 1}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let server = try Self.serve(redis, [
            "--config", config, "--upstream", "http://127.0.0.1:\(try await mock.port())", "--on-store-failure", "deny",
        ])
        let client = HTTPTestClient(port: try await server.port(), adminToken: Self.token)
        #expect(try await client.send(.PUT, "/admin/v1/accounts/gw", "{}").status == 201)
        let key = try #require(try await client.send(.POST, "/admin/v1/accounts/gw/keys").json["api_key"] as? String)

        // A stream of 30 events 100 ms apart takes the account's one slot for 3 s: its
        // head comes once it is admitted.
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(client.port)/v1/chat/completions")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(key)")
        request.headers.add(name: "x-mock-completion-tokens", value: "30")
        request.headers.add(name: "x-mock-event-interval-ms", value: "100")
        request.body = .bytes(ByteBuffer(string: #"{"model": "MiniMax-M2", "stream": true, "messages": [{"role": "user", "content": "hi"}]}"#))
        let stream = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        // Read without taking a slot: the usage endpoint's concurrency in use.
        let limits = try await client.send(.GET, "/admin/v1/accounts/gw/usage").json["limits"] as? [[String: Any]]
        let held = (limits?.first { $0["dimension"] as? String == "concurrency" }?["used"] as? NSNumber)?.intValue == 1
        #expect(held, "the stream holds the slot")
        // Redis goes while the stream runs: its settlement at the end cannot be made.
        redis.kill()
        _ = try await stream.body.collect(upTo: 1 << 20)
        #expect(stream.status == .ok, "the stream itself is not cut by the store's outage")
        let waiting = try await withDeadline(.seconds(10)) {
            _ = try await server.waitForOutput("gateway settlements wait for the store to answer")
        }
        #expect(waiting, "the settlement waits for Redis")
        #expect(try await client.send(.GET, "/metrics").body.contains("weir_gateway_settlements_waiting 1"))
        // Redis comes back with the lease (append-only file): the settlement is sent again
        // by itself, and the slot is free without waiting the lease's hour.
        _ = try await server.waitForOutput("store unreachable")
        _ = try await server.waitForOutput("registry refresh failed")
        try redis.start()
        let freed = try await withDeadline(.seconds(10)) {
            _ = try await server.waitForOutput("gateway settlements sent again")
            try await Self.waitForRecovery(of: server)
        }
        #expect(freed, "the settlement is sent again once Redis answers")
        #expect(try await client.send(.POST, "/v1/acquire", Self.acquire("gw")).status == 200, "the slot is free again")
        #expect(try await client.send(.GET, "/metrics").body.contains("weir_gateway_settlements_waiting 0"))
        server.signal(SIGTERM)
        #expect(await server.exitStatus() == 0)
        mock.signal(SIGTERM)
        _ = await mock.exitStatus()
    }

    @Test("a Redis restarted from its append-only file keeps the registry")
    func registrySurvivesRedisRestart() async throws {
        let directory = scratchDirectory()
        let redis = try await RedisServerProcess(appendOnlyDirectory: directory)
        defer { redis.stop() }
        let prefix = "aof\(UInt32.random(in: 0...UInt32.max)):"
        let first = try Self.serve(redis, ["--redis-prefix", prefix])
        let one = HTTPTestClient(port: try await first.port(), adminToken: Self.token)
        #expect(try await one.send(.PUT, "/admin/v1/accounts/acme", "{}").status == 201)
        let recharged = try await one.send(.POST, "/admin/v1/accounts/acme/recharges", #"{"amount": 25}"#)
        #expect(recharged.json["tier"] as? String == "paid")
        first.signal(SIGTERM)
        _ = await first.exitStatus()
        redis.kill()
        try redis.start()

        let second = try Self.serve(redis, ["--redis-prefix", prefix])
        let two = HTTPTestClient(port: try await second.port(), adminToken: Self.token)
        let account = try await two.send(.GET, "/admin/v1/accounts/acme")
        #expect(account.json["tier"] as? String == "paid")
        #expect((account.json["recharges"] as? NSNumber)?.intValue == 25)
        let acquired = try await two.send(.POST, "/v1/acquire", Self.acquire("acme", model: "MiniMax-M2-Stable"))
        #expect(acquired.headers.first(name: "x-ratelimit-limit-requests") == "500")
        second.signal(SIGTERM)
        _ = await second.exitStatus()
    }
}

/// Checks `condition` now and again after each registry refresh of `server` that loads
/// changes (its log line), until it holds: a wait for that instance's event, not a poll.
/// True when it held within `limit`.
func afterRefreshes(
    of server: ServerProcess, within limit: Duration, _ condition: @escaping @Sendable () async throws -> Bool
) async throws -> Bool {
    let line = "registry: loaded changes made through another instance"
    return try await withDeadline(limit) {
        var seen = server.occurrences(of: line)
        while !(try await condition()) {
            seen += 1
            try await server.waitForOutput(line, count: seen)
        }
    }
}

/// Runs `body` (which waits on events, never on time) to its end, and says whether it
/// ended within `limit` of the call. Nothing sleeps: a `body` whose event never comes is
/// ended by the suite's time limit.
func withDeadline(_ limit: Duration, _ body: @escaping @Sendable () async throws -> Void) async throws -> Bool {
    let started = ContinuousClock.now
    try await body()
    return ContinuousClock.now - started <= limit
}
