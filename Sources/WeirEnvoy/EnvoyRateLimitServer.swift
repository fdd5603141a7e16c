import NIOCore
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOPosix
import ServiceLifecycle

/// The gRPC server of `EnvoyRateLimitService`: plaintext HTTP/2 on
/// `configuration.host:port`, as a `Service` of the application's `ServiceGroup`.
///
/// `run()` binds, reports the bound port (`onListening`, and one `notice` log line),
/// serves until graceful shutdown (then finishes the RPCs in flight) or cancellation,
/// and throws when the address cannot be bound.
///
/// Concurrency: `run()` is called once; the server's RPCs run on `eventLoopGroup`.
public struct EnvoyRateLimitServer: Service {
    let service: EnvoyRateLimitService
    let eventLoopGroup: MultiThreadedEventLoopGroup
    let logger: Logger

    /// - Parameter eventLoopGroup: the loops serving connections; NIO's shared
    ///   singleton when nil.
    public init(service: EnvoyRateLimitService, eventLoopGroup: MultiThreadedEventLoopGroup? = nil, logger: Logger) {
        self.service = service
        self.eventLoopGroup = eventLoopGroup ?? .singletonMultiThreadedEventLoopGroup
        self.logger = logger
    }

    public func run() async throws {
        let configuration = service.configuration
        let host = configuration.host == "localhost" ? "127.0.0.1" : configuration.host
        // Connections beyond the limit are closed as they are accepted; one that sends no
        // byte for the idle timeout is closed (gRPC's own idle handling only asks a client
        // to leave: GOAWAY, then a PING a hostile client never answers); the RPCs one
        // connection holds are bounded.
        let connections = ConnectionCount()
        let maxConnections = configuration.maxConnections
        let idleTimeout = configuration.idleTimeout.map { TimeAmount.nanoseconds(Int64(clamping: $0)) }
        let transportConfig = HTTP2ServerTransport.Posix.Config.defaults { config in
            config.http2.maxConcurrentStreams = configuration.maxConcurrentStreams
            config.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
                guard connections.open(channel, limit: maxConnections) else { return channel.close() }
                guard let idleTimeout else { return channel.eventLoop.makeSucceededVoidFuture() }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        [IdleStateHandler(readTimeout: idleTimeout), IdleConnectionCloser()], position: .first)
                }
            }
        }
        let transport =
            host.contains(":")
            ? HTTP2ServerTransport.Posix(
                address: .ipv6(host: host, port: configuration.port), transportSecurity: .plaintext,
                config: transportConfig, eventLoopGroup: eventLoopGroup)
            : HTTP2ServerTransport.Posix(
                address: .ipv4(host: host, port: configuration.port), transportSecurity: .plaintext,
                config: transportConfig, eventLoopGroup: eventLoopGroup)
        let server = GRPCServer(transport: transport, services: [service])
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                let bound = try await transport.listeningAddress
                let port = bound.ipv4?.port ?? bound.ipv6?.port ?? configuration.port
                logger.notice(
                    "Envoy rate limit service (gRPC envoy.service.ratelimit.v3) on \(host):\(port), domain \(configuration.domain), unknown descriptors: \(configuration.unknownDescriptors.rawValue)")
                configuration.onListening?(port)
            }
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
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
