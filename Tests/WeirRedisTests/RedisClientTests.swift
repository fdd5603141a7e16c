import NIOCore
import Testing
import WeirCore
@testable import WeirRedis
import WeirRedisTesting

@Suite("RedisClient against a real redis-server")
struct RedisClientTests {
    @Test("concurrent commands pipelined on shared connections each get their own reply")
    func pipeliningOrder() async throws {
        try await withRedisServer { server in
            let client = server.client(connections: 2)
            defer { Task { await client.close() } }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<400 {
                    group.addTask {
                        let reply = try await client.command("ECHO", "value-\(index)")
                        #expect(reply.string == "value-\(index)")
                    }
                }
                try await group.waitForAll()
            }
            // One batch: replies come back in the order the commands were written.
            let commands = (0..<100).map { _ in ["INCR", "counter"] }
            let replies = try await client.pipeline(commands)
            #expect(replies == (1...100).map { RESPValue.integer(Int64($0)) })
            let error = try await client.pipeline([["NOSUCHCOMMAND"], ["PING"]])
            #expect(error[0].errorMessage?.hasPrefix("ERR") == true)
            #expect(error[1] == .simpleString("PONG"))
        }
    }

    @Test("a command past its timeout fails as transient, and the connection stays in step")
    func timeout() async throws {
        try await withRedisServer { server in
            let client = server.client(connections: 1, commandTimeout: .milliseconds(50))
            defer { Task { await client.close() } }
            // BLPOP holds the reply for 300 ms on the server's side: longer than the timeout.
            do {
                _ = try await client.command("BLPOP", "nothing-here", "0.3")
                Issue.record("BLPOP should have timed out")
            } catch let error as StoreError {
                #expect(error.isTransient)
                #expect(error.message.contains("no reply within 50 ms"))
            }
            // The late BLPOP reply is dropped; the next replies still match their commands.
            let slowClient = server.client(connections: 1, commandTimeout: .seconds(5))
            defer { Task { await slowClient.close() } }
            _ = try await slowClient.command("SET", "marker", "1")
            for index in 0..<5 {
                do {
                    let reply = try await client.command("ECHO", "after-\(index)")
                    #expect(reply.string == "after-\(index)")
                } catch let error as StoreError {
                    // Still queued behind the BLPOP: must time out, never get another's reply.
                    #expect(error.isTransient)
                }
            }
        }
    }

    @Test("a killed server fails calls fast and transiently; a restarted one is used again")
    func reconnect() async throws {
        try await withRedisServer { server in
            // No backoff: every call after a failure tries again (backoff is checked below).
            let client = server.client(connections: 2, commandTimeout: .seconds(2), initialBackoff: .zero)
            let patient = server.client(connections: 1, commandTimeout: .seconds(2), initialBackoff: .seconds(600))
            defer { Task { await client.close(); await patient.close() } }
            try await client.command("SET", "k", "before")
            try await patient.command("PING")
            server.kill()
            var lastFailure: StoreError?
            for _ in 0..<3 {
                do {
                    try await patient.command("PING")
                } catch let error as StoreError {
                    lastFailure = error
                }
            }
            #expect(lastFailure?.message.contains("next attempt in") == true,
                    "while backing off, calls fail at once: \(String(describing: lastFailure))")
            for _ in 0..<4 {
                do {
                    try await client.command("PING")
                    Issue.record("a PING to a killed server succeeded")
                } catch let error as StoreError {
                    #expect(error.isTransient, "\(error)")
                }
            }
            try server.start()
            var answered = false
            // Each slot needs at most one more failed call (its stale connection) to come back.
            for _ in 0..<6 where !answered {
                answered = (try? await client.command("PING")) == .simpleString("PONG")
            }
            #expect(answered)
            #expect(try await client.command("GET", "k").isNull, "a restarted server without persistence is empty")
        }
    }

    @Test("connections killed by the server under load: every command ends, with its reply or a transient error",
          .timeLimit(.minutes(1)))
    func killedConnections() async throws {
        try await withRedisServer { server in
            let client = server.client(connections: 2)
            let admin = server.client(connections: 1)
            defer { Task { await client.close(); await admin.close() } }
            let outcomes = try await withThrowingTaskGroup(of: (answered: Int, failed: Int).self) { group in
                for caller in 0..<8 {
                    group.addTask {
                        var tally = (answered: 0, failed: 0)
                        for call in 0..<150 {
                            do {
                                let reply = try await client.command("ECHO", "\(caller)-\(call)")
                                #expect(reply.string == "\(caller)-\(call)", "a reply out of step")
                                tally.answered += 1
                            } catch let error as StoreError {
                                #expect(error.isTransient, "\(error)")
                                tally.failed += 1
                            }
                        }
                        return tally
                    }
                }
                // Meanwhile the server drops every other client's connections, 40 times.
                group.addTask {
                    for _ in 0..<40 {
                        _ = try? await admin.command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                        await Task.yield()
                    }
                    return (0, 0)
                }
                var total = (answered: 0, failed: 0)
                for try await tally in group {
                    total.answered += tally.answered
                    total.failed += tally.failed
                }
                return total
            }
            #expect(outcomes.answered + outcomes.failed == 8 * 150)
            #expect(outcomes.answered > 0)
            #expect(try await client.command("PING") == .simpleString("PONG"), "the client reconnects afterwards")
        }
    }

    @Test("an unreachable server is a transient StoreError, never a hang")
    func unreachable() async throws {
        let port = try await withRedisServer { $0.port }
        let client = RedisClient(configuration: .init(port: port, connectTimeout: .milliseconds(200)))
        await #expect(throws: StoreError.self) { try await client.command("PING") }
        await #expect(throws: StoreError.self) { try await client.command("PING") }
    }
}
