import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import ServiceLifecycle
import Synchronization
import Testing
import WeirCore
import WeirPolicy
@testable import WeirEnvoy

/// `EnvoyRateLimitServer`'s graceful shutdown, seen by a real HTTP/2 client over a
/// socket: GOAWAY, the call in flight finished, the connection closed, `run()` returned.
@Suite("gRPC server shutdown", .timeLimit(.minutes(1)))
struct GRPCShutdownTests {
    /// Frames the client has read, and a wake-up for each.
    final class Recorder: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTP2Frame
        let frames = Mutex<[HTTP2Frame]>([])
        let arrivals: AsyncStream<Void>
        private let continuation: AsyncStream<Void>.Continuation

        init() {
            (arrivals, continuation) = AsyncStream.makeStream(of: Void.self)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let frame = unwrapInboundIn(data)
            frames.withLock { $0.append(frame) }
            continuation.yield()
        }

        /// Waits until `predicate` holds of the frames read.
        func wait(until predicate: ([HTTP2Frame]) -> Bool) async throws {
            var iterator = arrivals.makeAsyncIterator()
            while !frames.withLock({ predicate($0) }) {
                guard await iterator.next() != nil else { throw CancellationError() }
            }
        }
    }

    static let path = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

    static func headers() -> HTTP2Frame.FramePayload {
        .headers(.init(headers: [":method": "POST", ":scheme": "http", ":path": path, ":authority": "weir", "content-type": "application/grpc", "te": "trailers"]))
    }

    static func message() throws -> HTTP2Frame.FramePayload {
        var request = Envoy_Service_Ratelimit_V3_RateLimitRequest()
        request.domain = "weir"
        var descriptor = Envoy_Extensions_Common_Ratelimit_V3_RateLimitDescriptor()
        for (key, value) in [("account", "drain-1"), ("api", "text"), ("model", "MiniMax-M2")] {
            var entry = Envoy_Extensions_Common_Ratelimit_V3_RateLimitDescriptor.Entry()
            entry.key = key
            entry.value = value
            descriptor.entries.append(entry)
        }
        request.descriptors = [descriptor]
        let bytes: [UInt8] = try request.serializedBytes()
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(bytes.count))
        buffer.writeBytes(bytes)
        return .data(.init(data: .byteBuffer(buffer), endStream: true))
    }

    static func isTrailers(_ frame: HTTP2Frame, stream: Int) -> Bool {
        guard frame.streamID == HTTP2StreamID(stream), case .headers(let headers) = frame.payload else { return false }
        return headers.endStream && headers.headers.first(name: "grpc-status") == "0"
    }

    @Test("on graceful shutdown: GOAWAY, the call in flight is answered, the connection closes, run() returns")
    func drains() async throws {
        let limiter = Limiter(catalogue: .builtIn, store: InMemoryStore())
        let ports = AsyncStream.makeStream(of: Int.self)
        let logger = Logger(label: "weir-shutdown-test", factory: { _ in SwiftLogNoOpLogHandler() })
        let service = EnvoyRateLimitService(
            limiter: limiter,
            configuration: EnvoyServiceConfiguration(port: 0, onListening: { ports.continuation.yield($0) }),
            accountForAPIKey: { _ in nil }, logger: logger)
        let server = EnvoyRateLimitServer(service: service, logger: logger)
        let group = ServiceGroup(services: [server], logger: logger)
        let running = Task { try await group.run() }
        var portIterator = ports.stream.makeAsyncIterator()
        let port = try #require(await portIterator.next())

        let recorder = Recorder()
        let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOHTTP2Handler(mode: .client))
                    try channel.pipeline.syncOperations.addHandler(recorder)
                }
            }
            .connect(host: "127.0.0.1", port: port).get()

        // A whole call, answered.
        try await client.writeAndFlush(HTTP2Frame(streamID: 1, payload: Self.headers()))
        try await client.writeAndFlush(HTTP2Frame(streamID: 1, payload: try Self.message()))
        try await recorder.wait { $0.contains { Self.isTrailers($0, stream: 1) } }
        // A call begun, its message not sent yet; the PING's answer says the server has
        // read its headers.
        try await client.writeAndFlush(HTTP2Frame(streamID: 3, payload: Self.headers()))
        try await client.writeAndFlush(HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: 42), ack: false)))
        try await recorder.wait { $0.contains { if case .ping(_, ack: true) = $0.payload { true } else { false } } }

        await group.triggerGracefulShutdown()
        // The second GOAWAY names the last stream the server will finish: 3.
        try await recorder.wait {
            $0.contains { if case .goAway(let last, .noError, _) = $0.payload { last == 3 } else { false } }
        }
        try await client.writeAndFlush(HTTP2Frame(streamID: 3, payload: try Self.message()))
        try await recorder.wait { $0.contains { Self.isTrailers($0, stream: 3) } }
        // The server closes the connection and stops.
        try await client.closeFuture.get()
        try await running.value
    }
}
