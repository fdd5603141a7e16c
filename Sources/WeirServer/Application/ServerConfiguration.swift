import Foundation
import Logging
import NIOCore
import NIOPosix
import Prometheus
import WeirCore
import WeirPolicy
import WeirEnvoy

/// Everything `buildApplication(configuration:)` needs. The executable fills it from
/// the command line; tests fill it with a manual clock, port 0 and a scratch directory.
public struct ServerConfiguration: Sendable {
    /// Address to listen on. Default 127.0.0.1: reachable from this machine only.
    public var host: String
    /// Port to listen on; 0 picks a free one (the start-up log line says which).
    public var port: Int
    /// The catalogue file; nil for the built-in catalogue.
    public var configPath: String?
    /// Where the registry (`registry.sqlite`) lives.
    public var dataDirectory: String
    /// The admin API's bearer token; nil disables the admin API (every call is 403).
    public var adminToken: String?
    /// Where the limiter reads time. `SystemClock` in production.
    public var clock: any NanosecondClock
    /// Largest request body accepted, in bytes; larger ones get 413. Default 1 MiB.
    public var maxBodySize: Int
    /// How often idle keys and finished leases are swept from memory.
    public var evictionInterval: Duration
    /// Reload the config on SIGHUP (the executable sets this; in-process tests do not).
    public var reloadOnHangup: Bool
    /// Where metrics are registered; `/metrics` prints it.
    public var metricsRegistry: PrometheusCollectorRegistry
    /// The event loops serving connections; nil for NIO's shared singleton group (one
    /// loop per core of the machine). The executable passes a group with one loop per
    /// core this process may run on (`availableCores`), so that a server pinned with
    /// `taskset` does not time-share one core between several loops.
    public var eventLoopGroup: (any EventLoopGroup)?
    public var logger: Logger
    /// Where limiter state lives: this process's memory (default) or a shared Redis.
    public var store: StoreSettings
    /// Envoy's rate limit service over gRPC (`weir serve --grpc-port`); nil serves none.
    public var envoy: EnvoyServiceConfiguration? = nil
    /// Gateway mode (`--upstream`): proxy the model API's paths to this upstream; nil
    /// serves the decision API alone.
    public var gateway: GatewayConfiguration?
    /// What one client may hold of the HTTP port: idle and slow-request timeouts, open
    /// connections, header fields.
    public var connectionLimits = ConnectionLimits()
    /// Told of every decision and settlement of every shape, besides the server's own
    /// metrics and refusal history (audit, or a test waiting on them); nil for none.
    public var observer: (any DecisionObserver)? = nil
    /// The longest a caller may ask to wait for room instead of a 429 (`max_wait_ms`),
    /// in nanoseconds; 0 turns waiting off (every call is answered at once). Default 60 s.
    public var maxWait: UInt64 = 60 * 1_000_000_000
    /// Calls waiting at once, at most; beyond it a call is refused at once. Default 10,000.
    public var maxWaiting = 10_000
    /// What wakes waiting calls; nil for a timer on `eventLoopGroup` reading `clock`.
    /// Tests with a `ManualClock` pass a `ManualWaitTimer`.
    public var waitTimer: (any WaitTimer)? = nil

    public init(
        host: String = "127.0.0.1",
        port: Int = 8080,
        configPath: String? = nil,
        dataDirectory: String = "./weir-data",
        adminToken: String? = nil,
        clock: any NanosecondClock = SystemClock(),
        maxBodySize: Int = 1 << 20,
        evictionInterval: Duration = .seconds(10),
        reloadOnHangup: Bool = false,
        metricsRegistry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
        eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger = Logger(label: "weir"),
        store: StoreSettings = .memory,
        gateway: GatewayConfiguration? = nil
    ) {
        self.store = store
        self.gateway = gateway
        self.eventLoopGroup = eventLoopGroup
        self.host = host
        self.port = port
        self.configPath = configPath
        self.dataDirectory = dataDirectory
        self.adminToken = adminToken
        self.clock = clock
        self.maxBodySize = maxBodySize
        self.evictionInterval = evictionInterval
        self.reloadOnHangup = reloadOnHangup
        self.metricsRegistry = metricsRegistry
        self.logger = logger
    }
}

extension ServerConfiguration {
    /// The cores this process may run on (its CPU affinity, as `taskset` sets it), at
    /// least 1. NIO's own count reads cgroup limits and the machine, not the affinity.
    public static var availableCores: Int {
        // `Cpus_allowed` of /proc/self/status: the affinity mask in hexadecimal words.
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") })
        else {
            return System.coreCount
        }
        let count = line.dropFirst("Cpus_allowed:".count).reduce(0) { count, character in
            count + (character.hexDigitValue?.nonzeroBitCount ?? 0)
        }
        return count > 0 ? count : System.coreCount
    }
}
