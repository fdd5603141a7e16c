import Foundation
import Synchronization
import NIOCore
import NIOPosix
import WeirRedis

#if canImport(Glibc)
import Glibc
#endif

/// A `redis-server` a test starts on a free 127.0.0.1 port and stops by its PID, for
/// the tests of the Redis store and of `weir serve --store redis://`. Without
/// persistence unless the arguments ask for it (`appendOnlyDirectory:`). Readiness is
/// read from the server's own log line ("Ready to accept connections").
public final class RedisServerProcess: @unchecked Sendable {
    // @unchecked Sendable: `process` is replaced only by `start()`, `kill()` and `stop()`,
    // which each test calls from one task at a time.
    /// Fixed once `init` returns.
    public private(set) var port: Int
    /// Arguments added to the defaults (cluster mode, AOF...).
    public let extraArguments: [String]
    private var process: ChildProcess?

    public static var executable: String? {
        ["/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server"]
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Starts a server on a free port with AOF (`appendfsync always`) in `directory`, so
    /// that a restart keeps every acknowledged write.
    public convenience init(appendOnlyDirectory directory: String) async throws {
        try await self.init(arguments: ["--dir", directory, "--appendonly", "yes", "--appendfsync", "always"])
    }

    /// Starts a server on a free port, with `arguments` added to the defaults.
    ///
    /// The port is free when chosen but not held, so another process can take it before
    /// the server binds it; then the server is started again on another port (5 tries).
    public init(arguments: [String] = []) async throws {
        port = try await Self.freePort()
        extraArguments = arguments
        for attempt in 1...5 {
            do {
                try start()
                return
            } catch let error as TestSetupError where attempt < 5 && error.description.contains("Address already in use") {
                port = try await Self.freePort()
            }
        }
    }

    /// Starts a server on `port`.
    public init(port: Int, arguments: [String]) throws {
        self.port = port
        extraArguments = arguments
        try start()
    }

    /// A 127.0.0.1 port nobody listens on (bound by the system, then released).
    public static func freePort() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress!.port!
        try await channel.close()
        return port
    }

    /// Starts (or restarts) the server on `port` and returns once it accepts connections.
    ///
    /// The server's output is read as it comes (`ChildProcess`) until it says "Ready to
    /// accept connections"; the wait wakes on each piece of output and ends with an
    /// error if the output ends first or after 30 s.
    public func start() throws {
        guard let executable = Self.executable else {
            throw TestSetupError(description: "redis-server is not installed (scripts/install-deps --tests)")
        }
        let output = ChildOutput()
        let process = try ChildProcess(
            executable: executable,
            arguments: [
                "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--loglevel", "notice",
            ] + extraArguments,
            onOutput: { output.append($0) })
        self.process = process
        guard output.wait(for: "Ready to accept connections", timeout: .seconds(30)) else {
            stop()
            throw TestSetupError(description: "redis-server did not start: \(output.text)")
        }
    }

    /// Kills the server abruptly (SIGKILL), as a crash would.
    public func kill() {
        stop()
    }

    /// Stops the server (SIGKILL) and waits for it to exit. SIGKILL: the server keeps
    /// nothing worth a clean shutdown (its AOF is written with `appendfsync always`).
    public func stop() {
        guard let process else { return }
        process.signal(SIGKILL)
        process.wait()
        self.process = nil
    }

    deinit { stop() }

    public func client(
        connections: Int = 2, commandTimeout: TimeAmount = .seconds(5), initialBackoff: TimeAmount = .milliseconds(1)
    ) -> RedisClient {
        RedisClient(configuration: .init(
            port: port, connectionCount: connections, commandTimeout: commandTimeout,
            connectTimeout: .seconds(2), initialBackoff: initialBackoff, maximumBackoff: .milliseconds(50)))
    }
}

public struct TestSetupError: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

/// Runs `body` with a fresh server, stopped afterwards whatever happens.
public func withRedisServer<Result>(_ body: (RedisServerProcess) async throws -> Result) async throws -> Result {
    let server = try await RedisServerProcess()
    defer { server.stop() }
    return try await body(server)
}
