import AsyncHTTPClient
import Foundation
import GRDB
import NIOCore
import NIOHTTP1
import Synchronization
import Testing
import WeirConformance
import WeirRedisTesting

#if canImport(Glibc)
import Glibc
#endif

/// Admin writes survive `kill -9` (issue 17, point 5): `weir serve` is killed 20 times in
/// a row while two clients write to its admin API (recharges; new keys and accounts),
/// and restarted on the same registry each time. Every write it acknowledged is there
/// after the restart, none is half-applied (an account's recharge total is the sum of its
/// recharges), and the SQLite file passes `PRAGMA integrity_check`.
@Suite("Admin writes under kill -9", .serialized)
struct DurableAdminTests {
    enum Registry: String, CaseIterable { case sqlite, redis }

    static let token = "durable-admin-token"

    /// What the writers had acknowledged, and what was in flight when the server died.
    struct Acknowledged {
        var recharges = 0
        var rechargesInFlight = 0
        var keys: [String] = []
        var accounts: [String] = []
    }

    @Test("20 kills while the admin API is written to: every acknowledged write is there after each restart", arguments: Registry.allCases)
    func killedWhileWriting(registry: Registry) async throws {
        var redis: RedisServerProcess?
        if registry == .redis { redis = try await RedisServerProcess() }
        defer { redis?.stop() }
        let directory = scratchDirectory()
        let tokenFile = directory + "/admin-token"
        try Self.token.write(toFile: tokenFile, atomically: true, encoding: .utf8)
        var arguments = ["serve", "--port", "0", "--data", directory + "/registry", "--admin-token-file", tokenFile]
        if let redis { arguments += ["--store", "redis://127.0.0.1:\(redis.port)", "--redis-prefix", "durable:"] }

        var random = SeededGenerator(seed: registry == .sqlite ? 17 : 71)
        var acknowledged = Acknowledged()
        var server = try ServerProcess(arguments: arguments)
        var client = HTTPTestClient(port: try await server.port(), adminToken: Self.token)
        #expect(try await client.send(.PUT, "/admin/v1/accounts/durable", "{}").status < 300)
        for round in 0..<20 {
            let killAfter = Int.random(in: 2...24, using: &random)
            let state = Locked(acknowledged)
            let writes = Locked(0)
            let signal = EventSignal()
            let current = client
            let writer = { (kind: Int) in
                Task {
                    var step = 0
                    while !Task.isCancelled {
                        step += 1
                        do {
                            if kind == 0 {
                                state.value.withLock { $0.rechargesInFlight += 1 }
                                let answer = try await current.send(.POST, "/admin/v1/accounts/durable/recharges", #"{"amount": 1}"#)
                                state.value.withLock { state in
                                    state.rechargesInFlight -= 1
                                    if answer.status == 200 { state.recharges += 1 }
                                }
                            } else if step % 2 == 0 {
                                let answer = try await current.send(.POST, "/admin/v1/accounts/durable/keys")
                                if answer.status == 201, let prefix = answer.json["prefix"] as? String {
                                    state.value.withLock { $0.keys.append(prefix) }
                                }
                            } else {
                                let id = "acct-\(round)-\(step)"
                                let answer = try await current.send(.PUT, "/admin/v1/accounts/\(id)", "{}")
                                if answer.status < 300 { state.value.withLock { $0.accounts.append(id) } }
                            }
                        } catch {
                            return  // the server is gone
                        }
                        writes.value.withLock { $0 += 1 }
                        signal.ping()
                    }
                }
            }
            let writers = [writer(0), writer(1)]
            try await signal.wait(until: { writes.value.withLock { $0 } >= killAfter })
            server.signal(SIGKILL)
            #expect(await server.exitStatus() == 128 + SIGKILL)
            for task in writers { task.cancel(); await task.value }
            acknowledged = state.value.withLock { $0 }

            server = try ServerProcess(arguments: arguments)
            client = HTTPTestClient(port: try await server.port(), adminToken: Self.token)
            let account = try await client.send(.GET, "/admin/v1/accounts/durable")
            #expect(account.status == 200)
            let total = Int((account.json["recharges"] as? NSNumber)?.doubleValue ?? -1)
            // A recharge in flight when the server died may have been committed or not;
            // every acknowledged one must be there.
            #expect(total >= acknowledged.recharges && total <= acknowledged.recharges + acknowledged.rechargesInFlight,
                    "round \(round): \(total) recharges, \(acknowledged.recharges) acknowledged")
            acknowledged.recharges = total
            acknowledged.rechargesInFlight = 0
            let keys = Set(((account.json["keys"] as? [[String: Any]]) ?? []).compactMap { $0["prefix"] as? String })
            #expect(Set(acknowledged.keys).isSubset(of: keys), "round \(round): acknowledged keys lost")
            for id in acknowledged.accounts.suffix(3) {
                #expect(try await client.send(.GET, "/admin/v1/accounts/\(id)").status == 200, "round \(round): account \(id) lost")
            }
        }
        // The rounds wrote: the kills met a registry being written to, not an idle one.
        #expect(acknowledged.recharges >= 20 && acknowledged.keys.count >= 5 && acknowledged.accounts.count >= 5,
                "\(acknowledged.recharges) recharges, \(acknowledged.keys.count) keys, \(acknowledged.accounts.count) accounts")
        server.signal(SIGKILL)
        _ = await server.exitStatus()
        if registry == .sqlite {
            let database = try DatabaseQueue(path: directory + "/registry/registry.sqlite")
            try await database.read { db in
                #expect(try String.fetchOne(db, sql: "PRAGMA integrity_check") == "ok")
                // None half-applied: the account's total is the sum of its recharges.
                let total = try String.fetchOne(db, sql: "SELECT recharges FROM accounts WHERE id = 'durable'")
                let sum = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM recharges WHERE account_id = 'durable'")
                #expect(total.flatMap { Int($0) } == sum, "total \(total ?? "-"), \(sum ?? -1) recharge rows")
            }
        }
    }
}
