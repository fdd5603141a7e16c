import Foundation
import NIOCore
import WeirCore
import WeirRedis

/// Where `weir serve` keeps limiter state, as `--store`, `--redis-prefix`,
/// `--on-store-failure` and `--store-timeout` give it.
public enum StoreSettings: Sendable {
    /// This process's memory: nothing to install, limits per instance.
    case memory
    /// A Redis (or Redis Cluster) shared by every instance that names it with the same prefix.
    case redis(Redis)

    public struct Redis: Sendable {
        /// Where Redis is and how to talk to it (`RedisClient.Configuration(url:)`:
        /// host, port, database, TLS, credentials).
        public var client: RedisClient.Configuration
        /// Prepended to every key (limits and registry), so deployments can share a Redis.
        public var keyPrefix: String
        /// What decides while Redis is unreachable or slower than `commandTimeout`.
        public var failureMode: FailoverStore.Mode
        /// How long one Redis command may take before it counts as a failure.
        public var commandTimeout: Duration
        /// How often each instance looks for registry changes made by others.
        public var registryRefresh: Duration = .milliseconds(250)

        public init(
            client: RedisClient.Configuration, keyPrefix: String = "weir:",
            failureMode: FailoverStore.Mode = .local, commandTimeout: Duration = .milliseconds(50)
        ) {
            self.client = client
            self.keyPrefix = keyPrefix
            self.failureMode = failureMode
            self.commandTimeout = commandTimeout
        }

        var clientConfiguration: RedisClient.Configuration {
            let (seconds, attoseconds) = commandTimeout.components
            var configuration = client
            configuration.commandTimeout = .nanoseconds(max(1, seconds * 1_000_000_000 + attoseconds / 1_000_000_000))
            return configuration
        }

        /// The URL without credentials, for logs: `redis[s]://host:port/db`.
        public var url: String {
            let host = client.host.contains(":") ? "[\(client.host)]" : client.host
            return "\(client.tls == nil ? "redis" : "rediss")://\(host):\(client.port)/\(client.database)"
        }
    }

    /// Parses `--store`: `memory`, or `redis://[[user]:password@]host[:port][/db]`
    /// (`rediss://` for TLS; IPv6 hosts in brackets).
    ///
    /// - Throws: `StoreSettingsError` saying what is wrong with the text, never
    ///   repeating its credentials.
    public static func parse(_ text: String) throws(StoreSettingsError) -> StoreSettings {
        if text == "memory" { return .memory }
        guard text.hasPrefix("redis://") || text.hasPrefix("rediss://") else {
            throw StoreSettingsError("--store \(redacted(text)): expected memory or redis://host:port[/db] (rediss:// for TLS)")
        }
        do {
            return .redis(Redis(client: try RedisClient.Configuration(url: text)))
        } catch {
            throw StoreSettingsError("--store " + "\(error)".replacingOccurrences(of: text, with: redacted(text)))
        }
    }

    /// `text` with whatever stands between `://` and `@` replaced by `***`.
    static func redacted(_ text: String) -> String {
        guard let scheme = text.range(of: "://"), let at = text[scheme.upperBound...].lastIndex(of: "@") else { return text }
        return String(text[..<scheme.upperBound]) + "***" + String(text[at...])
    }
}

/// A `--store` value that cannot be used, with what is wrong with it.
public struct StoreSettingsError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}
