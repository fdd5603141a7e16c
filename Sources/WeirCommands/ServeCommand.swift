import ArgumentParser
import Foundation
import Hummingbird
import Logging
import Metrics
import NIOPosix
import Prometheus
import WeirPolicy
import WeirCore
import WeirServer
import WeirEnvoy

/// `weir serve`: the decision service, the admin API and the operations endpoints.
public struct ServeCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the decision service (POST /v1/acquire, /v1/settle), the admin API and /metrics.",
        discussion: """
            Listens on --host:--port (127.0.0.1:8080 by default). Limits come from --config \
            (the built-in catalogue by default); accounts, API keys and recharges persist in \
            a SQLite registry under --data. The admin API (/admin/v1) needs a bearer token \
            from --admin-token-file or WEIR_ADMIN_TOKEN; without one it answers 403. \
            SIGINT and SIGTERM stop the server gracefully; SIGHUP reloads --config (an invalid \
            file is logged and the running config kept). With --upstream URL it is also a \
            gateway: the model API's paths (/v1/chat/completions, /v1/text/chatcompletion_v2, \
            /v1/t2a_v2, ...) are limited per API key and forwarded to URL.
            """
    )

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0 picks a free one).")
    var port = 8080

    @Option(help: "Catalogue file (YAML). Default: the built-in catalogue.")
    var config: String?

    @Option(help: "Directory of the account registry (registry.sqlite).")
    var data = "./weir-data"

    @Option(name: .customLong("admin-token-file"), help: "File holding the admin API's bearer token. Default: $WEIR_ADMIN_TOKEN.")
    var adminTokenFile: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    @Option(help: "Where limiter state lives: memory, or redis://host:port[/db] shared by every instance.")
    var store = "memory"

    @Option(name: .customLong("redis-prefix"), help: "Prefix of every Redis key, so deployments can share a Redis.")
    var redisPrefix = "weir:"

    @Option(name: .customLong("on-store-failure"), help: "When Redis fails: deny (503), allow (everything), or local (an in-memory limiter with the same rules).")
    var onStoreFailure: FailoverStore.Mode = .local

    @Option(name: .customLong("store-timeout"), help: "Milliseconds one Redis command may take before the failure mode applies.")
    var storeTimeout = 50

    @Option(name: .customLong("registry-refresh-ms"), help: "With Redis: how often (milliseconds) each instance looks for registry changes made elsewhere.")
    var registryRefresh = 250

    @Option(name: .customLong("grpc-port"), help: "Serve Envoy's rate limit service (gRPC envoy.service.ratelimit.v3) on this port (0 picks a free one). Default: not served.")
    var grpcPort: Int?

    @Option(name: .customLong("grpc-host"), help: "Address of the gRPC rate limit service. Default: --host.")
    var grpcHost: String?

    @Option(name: .customLong("envoy-domain"), help: "The rate limit domain answered over gRPC (the Envoy filter's `domain`).")
    var envoyDomain = "weir"

    @Option(name: .customLong("envoy-unknown"), help: "Answer to descriptors that name no Weir call: allow or deny.")
    var envoyUnknown: UnknownDescriptorAnswer = .allow

    @Option(help: "Gateway mode: proxy the model API's paths to this upstream (e.g. https://api.minimax.io).")
    var upstream: String?

    @Option(name: .customLong("upstream-key-file"), help: "File holding the upstream's API key, sent in place of the client's key. Default: pass the client's key through.")
    var upstreamKeyFile: String?

    @Option(name: .customLong("upstream-timeout"), help: "Longest silence of the upstream (to the response head, then between body pieces), e.g. 30s, 5m.")
    var upstreamTimeout = "5m"

    @Flag(name: .customLong("forward-unknown"), help: "Forward paths outside the gateway table untouched (default: 404).")
    var forwardUnknown = false

    @Option(name: .customLong("idle-timeout"), help: "Close a connection with nothing open or pending after this long without a byte (e.g. 75s).")
    var idleTimeout = "75s"

    @Option(name: .customLong("request-timeout"), help: "A request must arrive whole within this long of its first byte, else 408 (e.g. 30s).")
    var requestTimeout = "30s"

    @Option(name: .customLong("max-connections"), help: "Open connections at most on the HTTP port; more are closed as they are accepted.")
    var maxConnections = 4_096

    @Option(name: .customLong("max-header-bytes"), help: "Bytes of a request's header fields at most (names and values), else 431.")
    var maxHeaderBytes = 16_384

    @Option(name: .customLong("max-header-count"), help: "Header fields of a request at most, else 431.")
    var maxHeaderCount = 100

    @Option(name: .customLong("max-wait-ms"), help: "The longest a caller may ask to wait for room instead of a 429 (max_wait_ms), in milliseconds; 0 turns waiting off.")
    var maxWaitMilliseconds: UInt64 = 60_000

    @Option(name: .customLong("max-waiting"), help: "Calls waiting for room at once, at most; beyond it a call is refused at once.")
    var maxWaiting = 10_000

    public init() {}

    /// The gateway settings of the command line, or nil without --upstream.
    func gatewayConfiguration() throws -> GatewayConfiguration? {
        guard let upstream else {
            if upstreamKeyFile != nil || forwardUnknown {
                throw ValidationError("--upstream-key-file and --forward-unknown need --upstream")
            }
            return nil
        }
        let url: URL
        do {
            url = try GatewayConfiguration.upstreamURL(upstream)
        } catch {
            throw ValidationError(error.description)
        }
        guard let timeout = Self.duration(upstreamTimeout), timeout > 0 else {
            throw ValidationError("--upstream-timeout \(upstreamTimeout): expected a positive duration such as 500ms, 30s or 5m")
        }
        return GatewayConfiguration(
            upstream: url, upstreamKey: try upstreamKeyFile.map { try Self.readSecret($0, option: "--upstream-key-file") },
            timeout: timeout, forwardUnknown: forwardUnknown)
    }

    /// The connection limits of the command line.
    func connectionLimits() throws -> ConnectionLimits {
        guard let idle = Self.duration(idleTimeout), idle > 0 else {
            throw ValidationError("--idle-timeout \(idleTimeout): expected a positive duration such as 500ms, 30s or 5m")
        }
        guard let request = Self.duration(requestTimeout), request > 0 else {
            throw ValidationError("--request-timeout \(requestTimeout): expected a positive duration such as 500ms, 30s or 5m")
        }
        guard maxConnections > 0 else { throw ValidationError("--max-connections must be at least 1, got \(maxConnections)") }
        guard maxHeaderBytes >= 1_024 else { throw ValidationError("--max-header-bytes must be at least 1024, got \(maxHeaderBytes)") }
        guard maxHeaderCount >= 8 else { throw ValidationError("--max-header-count must be at least 8, got \(maxHeaderCount)") }
        return ConnectionLimits(
            idleTimeout: idle, requestReadTimeout: request, maxConnections: maxConnections, maxHeaderCount: maxHeaderCount,
            maxHeaderBytes: maxHeaderBytes)
    }

    /// `500ms`, `30s`, `5m`, `1h` (a whole number and a unit) in nanoseconds.
    static func duration(_ text: String) -> UInt64? {
        let units: [(String, UInt64)] = [("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            guard let value = UInt64(text.dropLast(suffix.count)) else { return nil }
            let (product, overflow) = value.multipliedReportingOverflow(by: scale)
            return overflow ? nil : product
        }
        return nil
    }

    /// A secret file's content, surrounding whitespace trimmed; an error naming `option`
    /// when unreadable or empty.
    static func readSecret(_ path: String, option: String) throws -> String {
        let content: String
        do {
            content = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ValidationError("cannot read \(option) \(path): \(error.localizedDescription)")
        }
        let secret = content.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !secret.isEmpty else { throw ValidationError("\(option) \(path) is empty") }
        return secret
    }

    public func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let metricsRegistry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metricsRegistry))
        var logger = Logger(label: "weir")
        logger.logLevel = level

        let gateway = try gatewayConfiguration()
        // One event loop per core this process may run on (taskset, cpusets).
        let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: ServerConfiguration.availableCores)
        var storeSettings: StoreSettings
        do {
            storeSettings = try StoreSettings.parse(store)
        } catch {
            throw ValidationError(error.description)
        }
        if case .redis(var redis) = storeSettings {
            guard (1...60_000).contains(storeTimeout) else {
                throw ValidationError("--store-timeout must be between 1 and 60000 milliseconds, got \(storeTimeout)")
            }
            guard (10...60_000).contains(registryRefresh) else {
                throw ValidationError("--registry-refresh-ms must be between 10 and 60000, got \(registryRefresh)")
            }
            redis.keyPrefix = redisPrefix
            redis.failureMode = onStoreFailure
            redis.commandTimeout = .milliseconds(storeTimeout)
            redis.registryRefresh = .milliseconds(registryRefresh)
            storeSettings = .redis(redis)
        }
        var configuration = ServerConfiguration(
            host: host,
            port: port,
            configPath: config,
            dataDirectory: data,
            adminToken: try adminToken(),
            reloadOnHangup: true,
            metricsRegistry: metricsRegistry,
            eventLoopGroup: eventLoops,
            logger: logger,
            store: storeSettings,
            gateway: gateway
        )
        configuration.connectionLimits = try connectionLimits()
        guard maxWaitMilliseconds <= 86_400_000 else {
            throw ValidationError("--max-wait-ms must be at most 86400000 (one day), got \(maxWaitMilliseconds)")
        }
        guard maxWaiting > 0 else { throw ValidationError("--max-waiting must be at least 1, got \(maxWaiting)") }
        configuration.maxWait = maxWaitMilliseconds * Nanoseconds.perMillisecond
        configuration.maxWaiting = maxWaiting
        if let grpcPort {
            guard (0...65535).contains(grpcPort) else { throw ValidationError("--grpc-port must be between 0 and 65535, got \(grpcPort)") }
            guard !envoyDomain.isEmpty else { throw ValidationError("--envoy-domain must not be empty") }
            configuration.envoy = EnvoyServiceConfiguration(
                host: grpcHost ?? host, port: grpcPort, domain: envoyDomain, unknownDescriptors: envoyUnknown)
        }
        do {
            let application = try await buildApplication(configuration: configuration)
            try await application.runService()
        } catch let errors as ConfigErrors {
            try? await eventLoops.shutdownGracefully()
            FileHandle.standardError.write(Data("weir serve: invalid config\n\(errors.description)\n".utf8))
            throw ExitCode(2)
        } catch {
            try? await eventLoops.shutdownGracefully()
            throw error
        }
        try? await eventLoops.shutdownGracefully()
    }

    /// The admin token: the file's content (surrounding whitespace trimmed), else
    /// `WEIR_ADMIN_TOKEN`, else none. There is no default token.
    private func adminToken() throws -> String? {
        if let path = adminTokenFile {
            let content: String
            do {
                content = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw ValidationError("cannot read --admin-token-file \(path): \(error.localizedDescription)")
            }
            let token = content.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else { throw ValidationError("--admin-token-file \(path) is empty") }
            return token
        }
        if let token = ProcessInfo.processInfo.environment["WEIR_ADMIN_TOKEN"], !token.isEmpty {
            return token
        }
        return nil
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension FailoverStore.Mode: ExpressibleByArgument {}
extension UnknownDescriptorAnswer: ExpressibleByArgument {}
