import Logging
import NIOCore
import NIOExtras
import NIOHTTP2
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The gRPC server of `EnvoyRateLimitService`: plaintext HTTP/2 on
/// `configuration.host:port`, as a `Service` of the application's `ServiceGroup`.
///
/// **Methods.** `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` and
/// `grpc.health.v1.Health/Check` (`GRPCHealthCheck`: `SERVING` unless `isServing` says
/// otherwise or the server is draining), served by `GRPCUnaryHandler` on the frames of
/// each connection's event loop; every other method is `UNIMPLEMENTED`.
///
/// **A connection's pipeline:** the slow-bytes guard (`GRPCReadGuard`: a frame left
/// incomplete for `requestReadTimeout` closes the connection), the idle timer (a connection that sends no byte for
/// `idleTimeout` is closed: a hostile client never answers HTTP/2's own polite GOAWAY
/// and PING), `NIOHTTP2Handler` (HTTP/2 itself: `maxConcurrentStreams`, a 16 KiB header
/// list, outbound flow control), `NIOHTTP2ServerConnectionManagementHandler` (graceful
/// close) and `GRPCUnaryHandler`. Connections beyond `maxConnections` are closed as
/// they are accepted.
///
/// **Lifecycle.** `run()` binds, reports the bound port (`onListening`, and one `notice`
/// log line) and serves. On graceful shutdown (or cancellation) it stops accepting, and
/// each connection is sent GOAWAY, finishes the calls it has, and closes; connections
/// still open after `shutdownGracePeriod` are closed. `run()` returns once every
/// connection is closed, and throws when the address cannot be bound.
///
/// Concurrency: `run()` is called once; connections are served on `eventLoopGroup`.
public struct EnvoyRateLimitServer: Service {
    let service: EnvoyRateLimitService
    let eventLoopGroup: MultiThreadedEventLoopGroup
    let isServing: @Sendable () -> Bool
    let logger: Logger

    /// - Parameters:
    ///   - eventLoopGroup: the loops serving connections; NIO's shared singleton when nil.
    ///   - isServing: whether the health check says `SERVING` (a server passes whether
    ///     decisions can be made: not while Redis is down under `--redis-outage deny`).
    public init(
        service: EnvoyRateLimitService, eventLoopGroup: MultiThreadedEventLoopGroup? = nil,
        isServing: @escaping @Sendable () -> Bool = { true }, logger: Logger
    ) {
        self.service = service
        self.eventLoopGroup = eventLoopGroup ?? .singletonMultiThreadedEventLoopGroup
        self.isServing = isServing
        self.logger = logger
    }

    public func run() async throws {
        let configuration = service.configuration
        let host = configuration.host == "localhost" ? "127.0.0.1" : configuration.host
        let draining = Atomic<Bool>(false)
        let isServing = self.isServing
        let health = GRPCHealthCheck.method(services: ["envoy.service.ratelimit.v3.RateLimitService"]) {
            !draining.load(ordering: .relaxed) && isServing()
        }
        let methods = [
            "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit": service.shouldRateLimit,
            GRPCHealthCheck.path: health,
        ]
        let quiescing = ServerQuiescingHelper(group: eventLoopGroup)
        let connections = ConnectionCount()
        let serverChannel = try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                guard connections.open(channel, limit: configuration.maxConnections) else { return channel.close() }
                return channel.eventLoop.makeCompletedFuture {
                    try Self.configure(channel, configuration: configuration, methods: methods)
                }
            }
            .bind(host: host, port: configuration.port)
            .get()
        let port = serverChannel.localAddress?.port ?? configuration.port
        logger.notice(
            "Envoy rate limit service (gRPC envoy.service.ratelimit.v3) on \(host):\(port), domain \(configuration.domain), unknown descriptors: \(configuration.unknownDescriptors.rawValue)")
        configuration.onListening?(port)

        let drained = serverChannel.eventLoop.makePromise(of: Void.self)
        let drain: @Sendable () -> Void = {
            draining.store(true, ordering: .relaxed)
            quiescing.initiateShutdown(promise: drained)
        }
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await drained.futureResult.get()
            } onGracefulShutdown: {
                drain()
            }
        } onCancel: {
            drain()
        }
    }

    /// Sets up an accepted connection's pipeline.
    static func configure(
        _ channel: any Channel, configuration: EnvoyServiceConfiguration, methods: [String: GRPCUnaryMethod]
    ) throws {
        let sync = channel.pipeline.syncOperations
        let readTimeout = configuration.requestReadTimeout.map { TimeAmount.nanoseconds(Int64(clamping: $0)) }
        if let readTimeout { try sync.addHandler(GRPCReadGuard(timeout: readTimeout)) }
        if let idleTimeout = configuration.idleTimeout {
            try sync.addHandlers(
                IdleStateHandler(readTimeout: .nanoseconds(Int64(clamping: idleTimeout))), IdleConnectionCloser())
        }
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        // HTTP/2's header block rules (lowercase names, pseudo-headers first and once,
        // no connection-specific fields) are not checked field by field: the handler
        // reads four fields and answers any request it cannot serve with a status, and
        // writes only fields of its own. Measured: 5% of the CPU of a call
        // (BENCHMARKS.md, "Envoy rate limit service alone"). HPACK and framing errors
        // are still connection errors.
        connection.headerBlockValidation = .disabled
        connection.contentLengthValidation = .disabled
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: configuration.maxConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 16 * 1024),
        ]
        let goAways = GoAwayWatch()
        try sync.addHandler(NIOHTTP2Handler(mode: .server, frameDelegate: goAways, connectionConfiguration: connection))
        try sync.addHandler(
            NIOHTTP2ServerConnectionManagementHandler(
                eventLoop: channel.eventLoop,
                configuration: .init(
                    maxIdleTime: nil, maxAge: nil,
                    maxGraceTime: configuration.shutdownGracePeriod.map { .nanoseconds(Int64(clamping: $0)) },
                    keepalive: nil)))
        try sync.addHandler(
            GRPCUnaryHandler(
                methods: methods, maxMessageBytes: configuration.maxMessageBytes, goAways: goAways,
                requestReadTimeout: readTimeout))
    }
}

/// Closes a connection when `IdleStateHandler` says nothing was read for its timeout.
final class IdleConnectionCloser: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case IdleStateHandler.IdleStateEvent.read = event {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
