import Foundation
import NIOCore
import WeirRedis

#if canImport(Glibc)
import Glibc
#endif

/// A Redis Cluster of three masters (no replicas) this test process starts on free
/// 127.0.0.1 ports, in a temporary directory: three `redis-server --cluster-enabled yes`
/// joined by `redis-cli --cluster create`, ready once every node reports
/// `cluster_state:ok` (polled, with a deadline). Stopped by the servers' PIDs.
public final class RedisClusterProcess: @unchecked Sendable {
    // @unchecked Sendable: the servers are only started and stopped by the test that owns the cluster.
    public let servers: [RedisServerProcess]
    public let directory: URL

    public static var cli: String? {
        ["/usr/bin/redis-cli", "/usr/local/bin/redis-cli", "/usr/sbin/redis-cli"]
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    public init(masters: Int = 3) async throws {
        guard let cli = Self.cli else {
            throw TestSetupError(description: "redis-cli is not installed (redis-tools, via scripts/install-deps --tests)")
        }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("weir-cluster-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var servers: [RedisServerProcess] = []
        do {
            for index in 0..<masters {
                // The ports are free when chosen but not held: when another process takes
                // one first, the node starts again on other ports (5 tries).
                for attempt in 1...5 {
                    let port = try await RedisServerProcess.freePort()
                    // The cluster bus gets its own free port (the default, port + 10000, may be taken or past 65535).
                    let bus = try await RedisServerProcess.freePort()
                    do {
                        servers.append(try RedisServerProcess(port: port, arguments: [
                            "--cluster-enabled", "yes", "--cluster-port", String(bus),
                            "--cluster-config-file", directory.appendingPathComponent("nodes-\(index).conf").path,
                            "--cluster-node-timeout", "5000", "--dir", directory.path,
                            // The other masters keep serving their slots when one is killed (failover test).
                            "--cluster-require-full-coverage", "no",
                        ]))
                        break
                    } catch let error as TestSetupError where attempt < 5 && error.description.contains("Address already in use") {
                        try? FileManager.default.removeItem(at: directory.appendingPathComponent("nodes-\(index).conf"))
                    }
                }
            }
            self.servers = servers
            try Self.run(cli, ["--cluster", "create"] + servers.map { "127.0.0.1:\($0.port)" } + ["--cluster-replicas", "0", "--cluster-yes"])
            try await waitUntilReady()
        } catch {
            for server in servers { server.stop() }
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
    }

    /// Runs `redis-cli` and waits (at most 60 s, then kills it) for it to succeed.
    private static func run(_ executable: String, _ arguments: [String]) throws {
        let logPath = FileManager.default.temporaryDirectory
            .appendingPathComponent("weir-redis-cli-\(UInt32.random(in: 0...UInt32.max)).log").path
        defer { try? FileManager.default.removeItem(atPath: logPath) }
        let process = try ChildProcess(executable: executable, arguments: arguments, outputPath: logPath)
        var status = process.wait(timeout: .seconds(60))
        if status == nil {
            process.signal(SIGKILL)
            status = process.wait()
        }
        guard status == 0 else {
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            throw TestSetupError(description: "redis-cli \(arguments.joined(separator: " ")) failed (\(status ?? -1)): \(log)")
        }
    }

    /// Polls `CLUSTER INFO` on every node until all say `cluster_state:ok` (at most 30 s).
    private func waitUntilReady() async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        for server in servers {
            let client = server.client(connections: 1)
            defer { Task { await client.close() } }
            while true {
                let info = (try? await client.command("CLUSTER", "INFO"))?.string ?? ""
                if info.contains("cluster_state:ok") { break }
                guard ContinuousClock.now < deadline else {
                    throw TestSetupError(description: "cluster not ready on \(server.port) within 30 s: \(info)")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    public func stop() {
        for server in servers { server.stop() }
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }
}

/// Runs `body` with a fresh three-master cluster, stopped afterwards whatever happens.
public func withRedisCluster<Result>(_ body: (RedisClusterProcess) async throws -> Result) async throws -> Result {
    let cluster = try await RedisClusterProcess()
    defer { cluster.stop() }
    return try await body(cluster)
}
