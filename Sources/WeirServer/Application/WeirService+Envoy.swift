import NIOPosix
import Prometheus
import WeirCore
import WeirEnvoy
import WeirPolicy

extension WeirService {
    /// The Envoy rate limit service over this server's limiter, registry and metrics:
    /// API keys resolve as for `/v1/acquire` (registry, then the config's key hashes),
    /// decisions are counted in `weir_decisions_total` and refusals in the dashboard's
    /// refusal history, as on `/v1/acquire`, and the service's own counters
    /// go to the same Prometheus registry.
    /// Whether decisions can be made now: not while Redis fails under the `deny` mode
    /// (every decision would be refused for want of the store). The gRPC health check's
    /// answer; `/readyz` says the same and more.
    var decisionsCanBeMade: Bool {
        guard let sharedStore else { return true }
        return !(sharedStore.health.isDegraded && sharedStore.mode == .deny)
    }

    func envoyServer(_ envoy: EnvoyServiceConfiguration, configuration: ServerConfiguration) -> EnvoyRateLimitServer {
        // The gRPC port holds its connections to the server's limits, as the HTTP port does.
        var envoy = envoy
        envoy.idleTimeout = configuration.connectionLimits.idleTimeout
        envoy.maxConnections = configuration.connectionLimits.maxConnections
        envoy.requestReadTimeout = configuration.connectionLimits.requestReadTimeout
        envoy.maxMessageBytes = configuration.maxBodySize
        envoy.maxWait = configuration.maxWait
        let service = EnvoyRateLimitService(
            limiter: limiter,
            configuration: envoy,
            accountForAPIKey: { [self] key in account(forAPIKey: key) },
            metricsFactory: PrometheusMetricsFactory(registry: configuration.metricsRegistry),
            logger: configuration.logger)
        return EnvoyRateLimitServer(
            service: service,
            eventLoopGroup: configuration.eventLoopGroup as? MultiThreadedEventLoopGroup,
            isServing: { [self] in decisionsCanBeMade },
            logger: configuration.logger)
    }
}
