import Foundation
import NIOCore
import WeirCore
import WeirRedis

/// Where `weir serve` keeps limiter state, as `--store`, `--redis-prefix`,
/// `--on-store-failure` and `--store-timeout` give it.
public enum StoreSettings: Sendable {
    /// This process's memory: nothing to install, limits per instance.
    case memory
    /// A Redis shared by every instance that names it with the same prefix.
    case redis(Redis)

    public struct Redis: Sendable {
        public var host: String
        public var port: Int
        public var database: Int
        /// Prepended to every key (limits and registry), so deployments can share a Redis.
        public var keyPrefix: String
        /// What decides while Redis is unreachable or slower than `commandTimeout`.
        public var failureMode: FailoverStore.Mode
        /// How long one Redis command may take before it counts as a failure.
        public var commandTimeout: Duration
        /// How often each instance looks for registry changes made by others.
        public var registryRefresh: Duration = .milliseconds(250)

        public init(
            host: String, port: Int = 6379, database: Int = 0, keyPrefix: String = "weir:",
            failureMode: FailoverStore.Mode = .local, commandTimeout: Duration = .milliseconds(50)
        ) {
            self.host = host
            self.port = port
            self.database = database
            self.keyPrefix = keyPrefix
            self.failureMode = failureMode
            self.commandTimeout = commandTimeout
        }

        var clientConfiguration: RedisClient.Configuration {
            let (seconds, attoseconds) = commandTimeout.components
            let nanoseconds = seconds * 1_000_000_000 + attoseconds / 1_000_000_000
            return RedisClient.Configuration(
                host: host, port: port, connectionCount: 2, commandTimeout: .nanoseconds(max(1, nanoseconds)),
                database: database)
        }

        /// `redis://host:port[/db]`, as operators write it.
        public var url: String { "redis://\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)" }
    }

    /// Parses `--store`: `memory` or `redis://host[:port][/db]` (IPv6 hosts in brackets).
    ///
    /// - Throws: `StoreSettingsError` saying what is wrong with the text.
    public static func parse(_ text: String) throws(StoreSettingsError) -> StoreSettings {
        if text == "memory" { return .memory }
        if text.hasPrefix("rediss://") {
            throw StoreSettingsError("--store \(text): TLS (rediss://) is not supported; use redis:// on a trusted network or a TLS tunnel")
        }
        guard text.hasPrefix("redis://") else {
            throw StoreSettingsError("--store \(text): expected memory or redis://host:port[/db]")
        }
        var rest = Substring(text.dropFirst("redis://".count))
        if rest.contains("@") {
            throw StoreSettingsError("--store: credentials in the URL are not supported (they would show in process lists)")
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !path.isEmpty {
                guard let number = Int(path), (0...15).contains(number) else {
                    throw StoreSettingsError("--store \(text): the database must be a number from 0 to 15, got \(path)")
                }
                database = number
            }
        }
        var host = String(rest)
        var port = 6379
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else {
                throw StoreSettingsError("--store \(text): unclosed [ in the host")
            }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let number = Int(after.dropFirst()) else {
                    throw StoreSettingsError("--store \(text): expected :port after the host")
                }
                port = number
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            guard let number = Int(rest[rest.index(after: colon)...]) else {
                throw StoreSettingsError("--store \(text): the port must be a number, got \(rest[rest.index(after: colon)...])")
            }
            port = number
        }
        guard !host.isEmpty else { throw StoreSettingsError("--store \(text): the host is missing") }
        guard (1...65535).contains(port) else { throw StoreSettingsError("--store \(text): port \(port) is out of range") }
        return .redis(Redis(host: host, port: port, database: database))
    }
}

/// A `--store` value that cannot be used, with what is wrong with it.
public struct StoreSettingsError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}
