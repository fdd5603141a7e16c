import WeirEnvoy
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import WeirCore
import WeirPolicy

/// Builds the `weir serve` application: decision, admin and operations routes over
/// one limiter, registry and metrics registry; background services for eviction,
/// the registry's lifetime and (optionally) SIGHUP reloads.
///
/// The executable and the tests both call this. Run the result with `runService()`
/// (SIGINT/SIGTERM shut it down gracefully) or drive it with HummingbirdTesting.
///
/// - Throws: `ConfigErrors` when the config file is invalid; registry errors when the
///   data directory cannot be opened.
public func buildApplication(configuration: ServerConfiguration) async throws -> some ApplicationProtocol {
    let service = try await WeirService(configuration: configuration)
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: UnmatchedRouteMiddleware())
    router.add(middleware: UnavailableAnswerMiddleware(logger: configuration.logger))
    service.addDecisionRoutes(to: router)
    service.addAdminRoutes(to: router)
    service.addOperationsRoutes(to: router)
    service.addDashboardRoutes(to: router)
    service.addContractRoutes(to: router)

    var services: [any Service] = [
        RegistryService(registry: service.registry, logger: configuration.logger),
        EvictionService(store: service.memoryStore, interval: configuration.evictionInterval),
    ]
    if configuration.reloadOnHangup { services.append(HangupReloadService(service: service)) }
    if let envoy = configuration.envoy { services.append(service.envoyServer(envoy, configuration: configuration)) }
    var gatewayDescription = ""
    var gateway: Gateway?
    if let gatewayConfiguration = configuration.gateway {
        let made = Gateway(
            service: service, configuration: gatewayConfiguration,
            eventLoopGroup: configuration.eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton)
        made.addRoutes(to: router)
        services.append(GatewayClientService(client: made.client))
        if service.sharedStore != nil {
            // Only a shared store's settlements can fail for want of the store.
            services.append(SettlementRetryService(retries: service.settlementRetries, limiter: service.limiter))
        }
        gateway = made
        gatewayDescription = "; gateway to \(gatewayConfiguration.upstream.absoluteString)"
            + (gatewayConfiguration.forwardUnknown ? " (forwarding unknown paths)" : "")
    }

    let gatewayLine = gatewayDescription
    let fastGateway = gateway
    let connectionLimits = configuration.connectionLimits
    let connections = ConnectionCount()
    let logger = configuration.logger
    let catalogue = service.limiter.catalogue
    let configDescription = configuration.configPath.map { "\($0) (\(catalogue.rules.count) rules)" }
        ?? "built-in catalogue (\(catalogue.rules.count) rules)"
    let storeDescription = service.backend.description
    services += service.backend.services
    let registryPath = service.registry.location
    let accountCount = service.registry.accountCount
    let adminState = configuration.adminToken == nil ? "disabled (no token)" : "enabled"
    // Hummingbird's own start-up line would be a second one: it logs at warning and up
    // unless the operator asked for debugging.
    var frameworkLogger = logger
    if frameworkLogger.logLevel > .debug { frameworkLogger.logLevel = max(frameworkLogger.logLevel, .warning) }
    return Application(
        router: router,
        server: HTTPServerBuilder { responder in
            DecisionChannel(
                responder: responder, service: service, gateway: fastGateway, limits: connectionLimits,
                connections: connections)
        },
        configuration: ApplicationConfiguration(address: .hostname(configuration.host, port: configuration.port)),
        services: services,
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? configuration.port
            logger.notice(
                "weir serve listening on http://\(configuration.host):\(port); config: \(configDescription); store: \(storeDescription); registry: \(registryPath) (\(accountCount) accounts); admin API: \(adminState)\(gatewayLine)")
        },
        eventLoopGroupProvider: configuration.eventLoopGroup.map { .shared($0) } ?? .singleton,
        logger: frameworkLogger
    )
}
