import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import Testing
import WeirRedisTesting

/// `weir serve` as a real process: started from the built binary, driven over HTTP
/// with AsyncHTTPClient, stopped with signals (including `kill -9`).
@Suite("weir serve as a process", .serialized, .timeLimit(.minutes(2)))
struct ServeProcessTests {
    @Test("a recharge acknowledged before kill -9 survives the restart; SIGTERM stops gracefully")
    func persistenceAcrossHardKill() async throws {
        let data = scratchDirectory()
        let tokenFile = data + "/admin-token"
        try "s3cret-admin\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let arguments = ["serve", "--port", "0", "--data", data + "/registry", "--admin-token-file", tokenFile]

        let first = try ServerProcess(arguments: arguments)
        let port = try await first.port()
        let client = HTTPTestClient(port: port, adminToken: "s3cret-admin")
        #expect(try await client.send(.PUT, "/admin/v1/accounts/acme", "{}").status == 201)
        let key = try #require(try await client.send(.POST, "/admin/v1/accounts/acme/keys").json["api_key"] as? String)
        let recharged = try await client.send(.POST, "/admin/v1/accounts/acme/recharges", #"{"amount": 10}"#)
        #expect(recharged.status == 200)
        #expect(recharged.json["tier"] as? String == "paid")
        first.signal(SIGKILL)
        #expect(await first.exitStatus() == 128 + SIGKILL)

        let second = try ServerProcess(arguments: arguments)
        let client2 = HTTPTestClient(port: try await second.port(), adminToken: "s3cret-admin")
        let account = try await client2.send(.GET, "/admin/v1/accounts/acme")
        #expect(account.status == 200)
        #expect(account.json["tier"] as? String == "paid")
        #expect((account.json["recharges"] as? NSNumber)?.intValue == 10)
        let acquired = try await client2.send(
            .POST, "/v1/acquire", #"{"api_key": "\#(key)", "api": "text", "model": "MiniMax-M2-Stable"}"#)
        #expect(acquired.status == 200)
        let limits = try #require(acquired.json["limits"] as? [[String: Any]])
        #expect((limits.first?["limit"] as? NSNumber)?.intValue == 500)
        #expect(acquired.headers.first(name: "x-ratelimit-limit-requests") == "500")

        second.signal(SIGTERM)
        #expect(await second.exitStatus() == 0)
        // The key is never logged; the start-up line says where, which config and store.
        for server in [first, second] {
            #expect(!server.output.contains(key))
            let startLines = server.output.split(separator: "\n").filter { $0.contains("listening on") }
            #expect(startLines.count == 1)
            #expect(startLines.first?.contains("config: built-in catalogue") == true)
            #expect(startLines.first?.contains("store: in-memory") == true)
        }
    }

    @Test("SIGHUP reloads the config; an invalid file is logged and the running config kept; SIGINT stops")
    func hangupReload() async throws {
        let directory = scratchDirectory()
        let config = directory + "/weir.yaml"
        try OperationsTests.smallConfig.write(toFile: config, atomically: true, encoding: .utf8)
        let server = try ServerProcess(arguments: ["serve", "--port", "0", "--data", directory + "/registry", "--config", config])
        let client = HTTPTestClient(port: try await server.port(), adminToken: nil)
        let acquire = #"{"account": "a", "api": "text", "model": "MiniMax-M2"}"#
        #expect(try await client.send(.POST, "/v1/acquire", acquire).headers.first(name: "x-ratelimit-limit-requests") == "3")

        try "rules: [".write(toFile: config, atomically: true, encoding: .utf8)
        server.signal(SIGHUP)
        try await server.waitForOutput("config reload rejected")
        #expect(try await client.send(.POST, "/v1/acquire", acquire).headers.first(name: "x-ratelimit-limit-requests") == "3")

        try OperationsTests.smallConfig.replacingOccurrences(of: "requests: 3", with: "requests: 9")
            .write(toFile: config, atomically: true, encoding: .utf8)
        server.signal(SIGHUP)
        try await server.waitForOutput("config reloaded")
        #expect(try await client.send(.POST, "/v1/acquire", acquire).headers.first(name: "x-ratelimit-limit-requests") == "9")

        let admin = try await client.send(.POST, "/admin/v1/reload")
        #expect(admin.status == 403)
        server.signal(SIGINT)
        #expect(await server.exitStatus() == 0)
    }

    @Test("an invalid config stops start-up with exit status 2 and the file's errors")
    func invalidConfigAtStart() async throws {
        let directory = scratchDirectory()
        let config = directory + "/bad.yaml"
        try "tiers: []\nrules: 5\n".write(toFile: config, atomically: true, encoding: .utf8)
        let server = try ServerProcess(arguments: ["serve", "--port", "0", "--data", directory, "--config", config])
        #expect(await server.exitStatus() == 2)
        #expect(server.output.contains("bad.yaml"))
    }
}

/// A `weir` process (the built binary), its output collected as it comes.
///
/// Started with `ChildProcess` (posix_spawn, a reader thread, a waiter thread), not
/// Foundation's `Process`, whose pipes' readability handlers crashed a test run in
/// libdispatch as processes came and went. Waiting is event-driven: output and the exit
/// each signal `changes`; a test that waits forever is ended by the suite's time limit.
final class ServerProcess: Sendable {
    private let child: ChildProcess
    private let collected = Locked("")
    private let exited = Locked<Int32?>(nil)
    /// Whether the output reached its end (after the exit, its last bytes may still come).
    private let drained = Locked(false)
    private let changes: AsyncStream<Void>
    private let changed: AsyncStream<Void>.Continuation

    /// The `weir` binary next to the test bundle, or `$WEIR_BINARY`.
    static var binary: String {
        if let path = ProcessInfo.processInfo.environment["WEIR_BINARY"] { return path }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("weir").path
    }

    init(arguments: [String]) throws {
        let (changes, changed) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        (self.changes, self.changed) = (changes, changed)
        var environment = ProcessInfo.processInfo.environment
        environment["WEIR_ADMIN_TOKEN"] = nil
        let (collected, drained, exited) = (self.collected, self.drained, self.exited)
        child = try ChildProcess(
            executable: Self.binary, arguments: arguments, environment: environment,
            onOutput: { bytes in
                if bytes.isEmpty {
                    drained.value.withLock { $0 = true }
                } else {
                    collected.value.withLock { $0 += String(decoding: bytes, as: UTF8.self) }
                }
                changed.yield()
            },
            onExit: { status in
                exited.value.withLock { $0 = status }
                changed.yield()
            })
    }

    deinit {
        child.signal(SIGKILL)
    }

    var output: String { collected.value.withLock { $0 } }

    func signal(_ signal: Int32) {
        child.signal(signal)
    }

    /// How many times `text` is in the log so far.
    func occurrences(of text: String) -> Int {
        output.components(separatedBy: text).count - 1
    }

    /// Waits until the log contains `text` (`count` times); fails if the process exits
    /// (and its output has been read to the end) first. Wakes on each piece of output.
    @discardableResult
    func waitForOutput(_ text: String, count: Int = 1) async throws -> String {
        var iterator = changes.makeAsyncIterator()
        while true {
            let output = self.output
            if output.components(separatedBy: text).count - 1 >= count { return output }
            if exited.value.withLock({ $0 }) != nil && drained.value.withLock({ $0 }) { break }
            guard await iterator.next() != nil else { break }
        }
        throw TestFailure("no `\(text)` in the server's output:\n\(output)")
    }

    /// The port from the start-up line.
    func port() async throws -> Int {
        let output = try await waitForOutput("listening on http://127.0.0.1:")
        let tail = output.components(separatedBy: "listening on http://127.0.0.1:")[1]
        guard let port = Int(tail.prefix { $0.isNumber }) else { throw TestFailure("no port in: \(output)") }
        return port
    }

    /// The exit code (128 + the signal when a signal ended it), once the process has exited
    /// and its output has been read to the end.
    func exitStatus() async -> Int32 {
        var iterator = changes.makeAsyncIterator()
        while true {
            if let status = exited.value.withLock({ $0 }), drained.value.withLock({ $0 }) { return status }
            _ = await iterator.next()
        }
    }
}

/// A real HTTP client (AsyncHTTPClient) for a server on 127.0.0.1.
struct HTTPTestClient {
    let port: Int
    let adminToken: String?

    struct Answer {
        var status: UInt
        var headers: HTTPHeaders
        var body: String
        var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:]
        }
    }

    func send(_ method: HTTPMethod, _ path: String, _ body: String? = nil) async throws -> Answer {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        request.headers.add(name: "Content-Type", value: "application/json")
        if let adminToken, path.hasPrefix("/admin/") {
            request.headers.add(name: "Authorization", value: "Bearer \(adminToken)")
        }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return Answer(status: response.status.code, headers: response.headers, body: String(buffer: bytes))
    }
}

/// A `Mutex` in a class, so that closures can share it.
final class Locked<Value: Sendable>: Sendable {
    let value: Mutex<Value>
    init(_ initial: Value) { value = Mutex(initial) }
}
