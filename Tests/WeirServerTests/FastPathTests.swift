import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import WeirCore
import WeirRedis
import WeirRedisTesting
import WeirServer

#if canImport(Glibc)
import Glibc
#endif

@Suite("Decision fast path over raw sockets")
struct FastPathTests {
    @Test("pipelined requests are answered in order, decision and forwarded alike")
    func pipelining() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let acquire = #"{"account":"p","api":"text","model":"MiniMax-M2"}"#
            let requests =
                "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                + "POST /v1/acquire HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(acquire.utf8.count)\r\n\r\n\(acquire)"
                + "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
                + "POST /v1/acquire HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n{"
                + "POST /v1/acquire HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: \(acquire.utf8.count)\r\n\r\n\(acquire)"
            let started = ContinuousClock.now
            let text = try await RawHTTP.exchange(port: port, request: requests)
            // The exchange ends when the server closes after `Connection: close`, before
            // the 10-second receive timeout (a full parallel test run, browser included,
            // once took 5.4 s on this 2-core machine).
            #expect(ContinuousClock.now - started < .seconds(9))
            let statusLines = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { "HTTP/1.1 " + ($0.components(separatedBy: "\r\n").first ?? "") }
            #expect(statusLines == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request", "HTTP/1.1 200 OK"])
            let ok = text.range(of: #"{"status":"ok"}"#)?.lowerBound
            let allowed = text.range(of: #""allowed":true"#)?.lowerBound
            let ready = text.range(of: #""status":"ready""#)?.lowerBound
            #expect(ok != nil && allowed != nil && ready != nil)
            if let ok, let allowed, let ready { #expect(ok < allowed && allowed < ready) }
            #expect(text.contains("x-ratelimit-remaining-requests: 18"))
        }
    }

    @Test("on Redis, pipelined decisions are answered in order, each after its own round trip, by the same path")
    func pipeliningOnRedis() async throws {
        let redis = try await RedisServerProcess()
        defer { redis.stop() }
        var configuration = testConfiguration()
        configuration.store = .redis(StoreSettings.Redis(
            client: RedisClient.Configuration(host: "127.0.0.1", port: redis.port),
            keyPrefix: "pipe\(UInt32.random(in: 0...UInt32.max)):", commandTimeout: .seconds(5)))
        let app = try await buildApplication(configuration: configuration)
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let acquire = #"{"account":"p","api":"text","model":"MiniMax-M2"}"#
            let post = "POST /v1/acquire HTTP/1.1\r\nHost: x\r\nContent-Length: \(acquire.utf8.count)\r\n\r\n\(acquire)"
            let requests = post + post + post
                + "POST /v1/acquire HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n{"
                + "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
                + "POST /v1/acquire HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: \(acquire.utf8.count)\r\n\r\n\(acquire)"
            let text = try await RawHTTP.exchange(port: port, request: requests)
            let statusLines = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { "HTTP/1.1 " + ($0.components(separatedBy: "\r\n").first ?? "") }
            #expect(statusLines == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"])
            let remaining = text.components(separatedBy: "x-ratelimit-remaining-requests: ").dropFirst().map { $0.prefix { $0.isNumber } }
            #expect(remaining == ["19", "18", "17", "16"], "each decision in its request's order")
            let ready = text.range(of: #""status":"ready""#)?.lowerBound
            let last = text.range(of: "x-ratelimit-remaining-requests: 16")?.lowerBound
            #expect(ready != nil && last != nil)
            if let ready, let last { #expect(ready < last) }
        }
    }

    @Test("malformed HTTP is answered or closed, and the server goes on answering")
    func malformedHTTP() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.live) { client in
            let port = try #require(client.port)
            for garbage in ["GARBAGE\r\n\r\n", "POST /v1/acquire HTTP/1.1\r\nContent-Length: x\r\n\r\n", "\u{1}\u{2}\u{3}\r\n\r\n"] {
                let text = try await RawHTTP.exchange(port: port, request: garbage)
                #expect(!text.contains(" 500 "), "\(garbage.debugDescription): \(text)")
            }
            let acquire = #"{"account":"m","api":"text","model":"MiniMax-M2"}"#
            let text = try await RawHTTP.exchange(
                port: port,
                request: "POST /v1/acquire HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: \(acquire.utf8.count)\r\n\r\n\(acquire)")
            #expect(text.hasPrefix("HTTP/1.1 200"))
        }
    }

    @Test("a declared body over 1 MiB is refused before it is read")
    func declaredTooLarge() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let text = try await RawHTTP.exchange(
                port: port,
                request: "POST /v1/acquire HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2000000\r\n\r\n{}")
            #expect(text.hasPrefix("HTTP/1.1 413"))
        }
    }
}

/// An HTTP/1.1 exchange over a plain TCP socket to 127.0.0.1, bounded by a 10-second
/// receive timeout: sends `request` as is, reads until the server closes. The blocking
/// socket calls run on a thread of their own, never on the concurrency pool that the
/// in-process server needs.
enum RawHTTP {
    /// Sends `request` on a new connection and returns everything until the server closes it.
    static func exchange(port: Int, request: String) async throws -> String {
        // Connect and send on a thread too: a large request may block until the server reads.
        let connection = try await withCheckedThrowingContinuation { continuation in
            Thread {
                continuation.resume(with: Result {
                    let connection = try RawConnection(port: port)
                    try connection.send(request)
                    return connection
                })
            }.start()
        }
        return try await connection.readUntilClosed().0
    }

    /// Sends `request` and closes the connection at once, without reading an answer:
    /// a client that goes away.
    static func sendAndClose(port: Int, request: String) throws {
        let connection = try RawConnection(port: port)
        try connection.send(request)
        connection.close()
    }
}
