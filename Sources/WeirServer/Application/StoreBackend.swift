import Logging
import NIOPosix
import ServiceLifecycle
import WeirCore
import WeirRedis

/// Where `weir serve` keeps its state, made from `StoreSettings` in one place: the only
/// switch on the backend kind (as envoyproxy/ratelimit's `createLimiter`). Everything
/// else sees the store the limiter decides with, the registry, and the services that
/// keep them running.
///
/// - **memory:** an `InMemoryStore`; the registry in SQLite under `--data`.
/// - **redis:** `RedisStore` behind a `DenialCache` and a `FailoverStore` (its failure
///   mode decides with the in-memory store; a background probe brings it back); the
///   registry in Redis on a connection of its own (one connection, a patient timeout:
///   admin writes must not fail because a decision-sized timeout fired under load),
///   refreshed from the other instances' changes.
struct StoreBackend: Sendable {
    /// What the limiter decides with.
    let store: any RateLimitStore
    /// The in-memory store: the only one by default; with Redis, the one its `local` and
    /// `allow` failure modes decide with.
    let memory: InMemoryStore
    /// The shared store with its failure mode; nil in memory.
    let shared: FailoverStore?
    let registry: Registry
    /// For the start-up line: `in-memory`, or Redis's URL, prefix and failure mode.
    let description: String
    /// What keeps the backend running, after the server's own services.
    let services: [any Service]

    static func make(_ configuration: ServerConfiguration) async throws -> StoreBackend {
        let memory = InMemoryStore(clock: configuration.clock)
        switch configuration.store {
        case .memory:
            let registry = try await Registry(backend: SQLiteRegistryBackend(directory: configuration.dataDirectory))
            return StoreBackend(
                store: memory, memory: memory, shared: nil, registry: registry, description: "in-memory", services: [])
        case .redis(let settings):
            let group = configuration.eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton
            let client = RedisClient(configuration: settings.clientConfiguration, group: group)
            var registryConfiguration = settings.client
            registryConfiguration.connectionCount = 1
            registryConfiguration.commandTimeout = .seconds(5)
            let registryClient = RedisClient(configuration: registryConfiguration, group: group)
            let logger = configuration.logger
            let mode = settings.failureMode
            let shared = FailoverStore(
                primary: DenialCache(store: RedisStore(client: client, keyPrefix: settings.keyPrefix)), fallback: memory,
                mode: mode,
                onChange: { change in
                    switch change {
                    case .degraded(let error):
                        logger.warning(
                            "store unreachable: deciding by --on-store-failure \(mode.rawValue) until it answers",
                            metadata: ["error": "\(error)"])
                    case .recovered:
                        logger.notice("store answers again: decisions go to Redis")
                    }
                })
            // The registry must load once: an instance that cannot read its accounts
            // would answer every paid account as free.
            let registry: Registry
            do {
                registry = try await openRegistry(
                    RedisRegistryBackend(client: registryClient, keyPrefix: settings.keyPrefix, location: settings.url),
                    logger: logger)
            } catch {
                await client.close()
                await registryClient.close()
                throw error
            }
            return StoreBackend(
                store: shared, memory: memory, shared: shared, registry: registry,
                description: "\(settings.url) (prefix \(settings.keyPrefix), on-store-failure \(mode.rawValue))",
                services: [
                    RegistryRefreshService(registry: registry, interval: settings.registryRefresh, logger: logger),
                    StoreProbeService(store: shared),
                    RedisClientService(client: client),
                    RedisClientService(client: registryClient),
                ])
        }
    }

    /// Opens the registry in Redis, retrying transient failures (Redis still starting,
    /// a slow first connection) for up to `patience` before giving up.
    private static func openRegistry(
        _ backend: RedisRegistryBackend, logger: Logger, patience: Duration = .seconds(15)
    ) async throws -> Registry {
        let deadline = ContinuousClock.now + patience
        var wait = Duration.milliseconds(50)
        while true {
            do {
                return try await Registry(backend: backend)
            } catch let error as StoreError where error.isTransient && ContinuousClock.now + wait < deadline {
                logger.warning("cannot load the registry from Redis yet; retrying", metadata: ["error": "\(error)"])
                try await Task.sleep(for: wait)
                wait = min(wait * 2, .seconds(1))
            }
        }
    }
}
