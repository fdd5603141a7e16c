import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Synchronization
import Testing
import WeirPolicy
@testable import WeirEnvoy

/// `GRPCUnaryHandler` and `GRPCRequestReader` without sockets: HTTP/2 frames in, frames
/// out, on an `EmbeddedChannel` whose clock the test moves.
@Suite("gRPC unary calls on HTTP/2 frames")
struct GRPCUnaryHandlerTests {
    static let path = "/test.Echo/Call"

    /// A method that answers with its request reversed, at once.
    static let reverse = GRPCUnaryMethod { message, _ in .ready(.success(Array(message.readableBytesView.reversed()))) }

    /// Completions of a method that answers later, held for the test to call.
    final class Held: Sendable {
        let completions = Mutex<[@Sendable (Result<[UInt8], GRPCStatus>) -> Void]>([])
        var method: GRPCUnaryMethod {
            GRPCUnaryMethod { _, _ in
                .later { completion in self.completions.withLock { $0.append(completion) } }
            }
        }
        func complete(_ result: Result<[UInt8], GRPCStatus>) {
            for completion in completions.withLock({ $0 }) { completion(result) }
        }
    }

    static func channel(
        _ method: GRPCUnaryMethod = reverse, maxMessageBytes: Int = 1_024, bufferBudget: Int = 4 << 20,
        requestReadTimeout: TimeAmount? = nil
    ) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(
            GRPCUnaryHandler(
                methods: [path: method], maxMessageBytes: maxMessageBytes, goAways: GoAwayWatch(), bufferBudget: bufferBudget,
                requestReadTimeout: requestReadTimeout))
        return channel
    }

    static func headers(path: String = path, contentType: String = "application/grpc", timeout: String? = nil, end: Bool = false) -> HTTP2Frame.FramePayload {
        var headers: HPACKHeaders = [":method": "POST", ":scheme": "http", ":path": path, "content-type": contentType, "te": "trailers"]
        if let timeout { headers.add(name: "grpc-timeout", value: timeout) }
        return .headers(.init(headers: headers, endStream: end))
    }

    static func message(_ bytes: [UInt8], flag: UInt8 = 0) -> [UInt8] {
        [flag] + withUnsafeBytes(of: UInt32(bytes.count).bigEndian, Array.init) + bytes
    }

    static func data(_ bytes: [UInt8], end: Bool = true) -> HTTP2Frame.FramePayload {
        .data(.init(data: .byteBuffer(ByteBuffer(bytes: bytes)), endStream: end))
    }

    static func send(_ channel: EmbeddedChannel, _ stream: Int, _ payload: HTTP2Frame.FramePayload) throws {
        try channel.writeInbound(HTTP2Frame(streamID: HTTP2StreamID(stream), payload: payload))
    }

    /// Every frame written so far.
    static func written(_ channel: EmbeddedChannel) throws -> [HTTP2Frame] {
        var frames: [HTTP2Frame] = []
        while let frame = try channel.readOutbound(as: HTTP2Frame.self) { frames.append(frame) }
        return frames
    }

    /// The trailers-only answer in `frames`: its `:status`, `grpc-status` and `grpc-message`.
    static func status(_ frames: [HTTP2Frame]) -> (http: String?, code: String?, message: String?, headers: HPACKHeaders)? {
        for frame in frames {
            if case .headers(let headers) = frame.payload, headers.endStream {
                return (headers.headers.first(name: ":status"), headers.headers.first(name: "grpc-status"),
                        headers.headers.first(name: "grpc-message"), headers.headers)
            }
        }
        return nil
    }

    @Test("a call: response headers, the length-prefixed answer, grpc-status 0")
    func answered() throws {
        let channel = try Self.channel()
        try Self.send(channel, 1, Self.headers())
        try Self.send(channel, 1, Self.data(Self.message([1, 2, 3])))
        let frames = try Self.written(channel)
        #expect(frames.count == 3)
        guard frames.count == 3 else { return }
        guard case .headers(let head) = frames[0].payload, case .data(let body) = frames[1].payload,
            case .headers(let trailers) = frames[2].payload, case .byteBuffer(let bytes) = body.data
        else { Issue.record("frames: \(frames)"); return }
        #expect(head.headers.first(name: ":status") == "200")
        #expect(head.headers.first(name: "content-type") == "application/grpc")
        #expect(!head.endStream && !body.endStream && trailers.endStream)
        #expect(Array(bytes.readableBytesView) == Self.message([3, 2, 1]))
        #expect(trailers.headers.first(name: "grpc-status") == "0")
        #expect(frames.allSatisfy { $0.streamID == HTTP2StreamID(1) })
    }

    @Test("a message split anywhere across DATA frames reads as one (random splits)")
    func randomSplits() throws {
        var generator = SystemRandomNumberGenerator()
        for round in 0..<200 {
            let length = Int.random(in: 0...300, using: &generator)
            let payload = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let wire = Self.message(payload)
            var reader = GRPCRequestReader(maxMessageBytes: 1_024)
            var offset = 0
            while offset < wire.count {
                let size = Int.random(in: 1...max(1, wire.count - offset), using: &generator)
                try reader.append(ByteBuffer(bytes: wire[offset..<offset + size]))
                offset += size
            }
            let message = try reader.finish()
            #expect(Array(message.readableBytesView) == payload, "round \(round)")
            #expect(reader.bufferedBytes == 0)
        }
    }

    @Test("the reader refuses a long message at its prefix, compression, a second message, and an unfinished one")
    func readerFailures() throws {
        var reader = GRPCRequestReader(maxMessageBytes: 10)
        #expect(throws: GRPCRequestReader.Failure.tooLarge(length: 11, limit: 10)) {
            try reader.append(ByteBuffer(bytes: Self.message([UInt8](repeating: 0, count: 11)).prefix(5)))
        }
        reader = GRPCRequestReader(maxMessageBytes: 10)
        #expect(throws: GRPCRequestReader.Failure.compressed) { try reader.append(ByteBuffer(bytes: Self.message([1], flag: 1))) }
        reader = GRPCRequestReader(maxMessageBytes: 10)
        #expect(throws: GRPCRequestReader.Failure.invalidFlag(7)) { try reader.append(ByteBuffer(bytes: Self.message([1], flag: 7))) }
        reader = GRPCRequestReader(maxMessageBytes: 10)
        #expect(throws: GRPCRequestReader.Failure.secondMessage) {
            try reader.append(ByteBuffer(bytes: Self.message([1]) + Self.message([2])))
        }
        reader = GRPCRequestReader(maxMessageBytes: 10)
        try reader.append(ByteBuffer(bytes: Self.message([1, 2, 3]).prefix(6)))
        #expect(reader.bufferedBytes == 6)
        #expect(throws: GRPCRequestReader.Failure.incomplete(buffered: 6)) { _ = try reader.finish() }
        reader = GRPCRequestReader(maxMessageBytes: 10)
        #expect(throws: GRPCRequestReader.Failure.incomplete(buffered: 0)) { _ = try reader.finish() }
    }

    @Test("grpc-timeout: every unit, 8 digits at most, saturating")
    func timeouts() {
        #expect(GRPCTimeout.nanoseconds("1H") == 3_600_000_000_000)
        #expect(GRPCTimeout.nanoseconds("2M") == 120_000_000_000)
        #expect(GRPCTimeout.nanoseconds("3S") == 3_000_000_000)
        #expect(GRPCTimeout.nanoseconds("20m") == 20_000_000)
        #expect(GRPCTimeout.nanoseconds("5u") == 5_000)
        #expect(GRPCTimeout.nanoseconds("99999999n") == 99_999_999)
        #expect(GRPCTimeout.nanoseconds("99999999H") == UInt64.max)
        #expect(GRPCTimeout.nanoseconds("123456789S") == nil)
        #expect(GRPCTimeout.nanoseconds("S") == nil)
        #expect(GRPCTimeout.nanoseconds("10s") == nil)
        #expect(GRPCTimeout.nanoseconds("-1S") == nil)
        #expect(GRPCStatus(.internal, "50% done\n é").encodedMessage == "50%25 done%0A %C3%A9")
    }

    @Test("unknown method, wrong content-type or method: answered at once, and a request still sending is reset")
    func refusedAtHeaders() throws {
        let channel = try Self.channel()
        try Self.send(channel, 1, Self.headers(path: "/test.Echo/Nope"))
        var frames = try Self.written(channel)
        #expect(Self.status(frames)?.http == "200")
        #expect(Self.status(frames)?.code == "12")
        #expect(Self.status(frames)?.message == "unknown method /test.Echo/Nope")
        #expect(frames.last.map { if case .rstStream(.noError) = $0.payload { true } else { false } } == true)
        // Whatever else the stream sends is ignored.
        try Self.send(channel, 1, Self.data(Self.message([1])))
        #expect(try Self.written(channel).isEmpty)

        try Self.send(channel, 3, Self.headers(contentType: "application/json", end: true))
        frames = try Self.written(channel)
        #expect(Self.status(frames)?.http == "415")
        #expect(frames.count == 1)

        var get: HPACKHeaders = [":method": "GET", ":scheme": "http", ":path": Self.path, "content-type": "application/grpc"]
        get.add(name: "te", value: "trailers")
        try Self.send(channel, 5, .headers(.init(headers: get, endStream: true)))
        #expect(Self.status(try Self.written(channel))?.http == "405")

        try Self.send(channel, 7, Self.headers(timeout: "soon", end: true))
        #expect(Self.status(try Self.written(channel))?.code == "13")
    }

    @Test("oversized, compressed, none or two messages: the status gRPC names, the method never asked")
    func refusedMessages() throws {
        let asked = Atomic<Int>(0)
        let counting = GRPCUnaryMethod { _, _ in
            asked.add(1, ordering: .relaxed)
            return .ready(.success([]))
        }
        let channel = try Self.channel(counting, maxMessageBytes: 16)
        try Self.send(channel, 1, Self.headers())
        // Only the prefix of a 17-byte message: refused before its bytes come.
        try Self.send(channel, 1, Self.data(Array(Self.message([UInt8](repeating: 1, count: 17)).prefix(5)), end: false))
        var frames = try Self.written(channel)
        #expect(Self.status(frames)?.code == "8")
        #expect(Self.status(frames)?.message == "the request message is 17 bytes, over the limit of 16")

        try Self.send(channel, 3, Self.headers())
        try Self.send(channel, 3, Self.data(Self.message([1], flag: 1)))
        frames = try Self.written(channel)
        #expect(Self.status(frames)?.code == "12")
        #expect(Self.status(frames)?.headers.first(name: "grpc-accept-encoding") == "identity")

        try Self.send(channel, 5, Self.headers(end: true))
        #expect(Self.status(try Self.written(channel))?.code == "12")

        try Self.send(channel, 7, Self.headers())
        try Self.send(channel, 7, Self.data(Self.message([1]) + Self.message([2])))
        #expect(Self.status(try Self.written(channel))?.code == "12")

        try Self.send(channel, 9, Self.headers())
        try Self.send(channel, 9, Self.data(Array(Self.message([1, 2, 3]).prefix(6))))
        #expect(Self.status(try Self.written(channel))?.code == "13")
        #expect(asked.load(ordering: .relaxed) == 0)
    }

    @Test("a call past its grpc-timeout ends DEADLINE_EXCEEDED; its late decision is dropped; a call answered at once has no timer")
    func deadlines() throws {
        let held = Held()
        let channel = try Self.channel(held.method)
        try Self.send(channel, 1, Self.headers(timeout: "50m"))
        try Self.send(channel, 1, Self.data(Self.message([1])))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(49))
        #expect(try Self.written(channel).isEmpty)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        let frames = try Self.written(channel)
        #expect(Self.status(frames)?.code == "4")
        // The caller had ended its side: no reset.
        #expect(frames.count == 1)
        held.complete(.success([9]))
        channel.embeddedEventLoop.run()
        #expect(try Self.written(channel).isEmpty)

        // Answered within the read that brought it: no timer is left to fire.
        let quick = try Self.channel()
        try Self.send(quick, 1, Self.headers(timeout: "1m"))
        try Self.send(quick, 1, Self.data(Self.message([1])))
        #expect(try Self.written(quick).count == 3)
        quick.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(try Self.written(quick).isEmpty)
    }

    @Test("a decision that comes later is written when it comes; one for a reset stream or a closed connection is dropped")
    func laterAnswers() throws {
        let held = Held()
        let channel = try Self.channel(held.method)
        try Self.send(channel, 1, Self.headers())
        try Self.send(channel, 1, Self.data(Self.message([1])))
        try Self.send(channel, 3, Self.headers())
        try Self.send(channel, 3, Self.data(Self.message([2])))
        try Self.send(channel, 3, .rstStream(.cancel))
        #expect(try Self.written(channel).isEmpty)
        held.complete(.success([7]))
        channel.embeddedEventLoop.run()
        let frames = try Self.written(channel)
        #expect(frames.count == 3)
        #expect(frames.allSatisfy { $0.streamID == HTTP2StreamID(1) })

        let failing = Held()
        let other = try Self.channel(failing.method)
        try Self.send(other, 1, Self.headers())
        try Self.send(other, 1, Self.data(Self.message([1])))
        failing.complete(.failure(GRPCStatus(.unavailable, "store down")))
        other.embeddedEventLoop.run()
        #expect(Self.status(try Self.written(other))?.code == "14")

        let closing = Held()
        let closed = try Self.channel(closing.method)
        try Self.send(closed, 1, Self.headers())
        try Self.send(closed, 1, Self.data(Self.message([1])))
        _ = try closed.finish()
        closing.complete(.success([1]))
        closed.embeddedEventLoop.run()
    }

    @Test("a call that may wait is cancelled when its stream is reset, its deadline passes, or the connection closes")
    func cancellations() throws {
        let made = Mutex<[WaitCancellation]>([])
        let waiting = GRPCUnaryMethod { _, cancellable in
            let cancellation = WaitCancellation()
            cancellable(cancellation)
            made.withLock { $0.append(cancellation) }
            return .later { _ in }
        }
        let channel = try Self.channel(waiting)
        try Self.send(channel, 1, Self.headers())
        try Self.send(channel, 1, Self.data(Self.message([1])))
        try Self.send(channel, 3, Self.headers(timeout: "10m"))
        try Self.send(channel, 3, Self.data(Self.message([1])))
        try Self.send(channel, 5, Self.headers())
        try Self.send(channel, 5, Self.data(Self.message([1])))
        let cancellations = made.withLock { $0 }
        #expect(cancellations.count == 3)
        guard cancellations.count == 3 else { return }
        #expect(!cancellations.contains { $0.isCancelled })
        try Self.send(channel, 1, .rstStream(.cancel))
        #expect(cancellations[0].isCancelled)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(10))
        #expect(cancellations[1].isCancelled)
        #expect(Self.status(try Self.written(channel))?.code == "4")
        #expect(!cancellations[2].isCancelled)
        _ = try channel.finish()
        #expect(cancellations[2].isCancelled)
    }

    @Test("a request that does not arrive whole within the read timeout ends DEADLINE_EXCEEDED and is reset; one that does is answered")
    func slowRequest() throws {
        let channel = try Self.channel(requestReadTimeout: .milliseconds(100))
        try Self.send(channel, 1, Self.headers())
        try Self.send(channel, 1, Self.data(Array(Self.message([1, 2, 3]).prefix(6)), end: false))
        try Self.send(channel, 3, Self.headers())
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(50))
        try Self.send(channel, 3, Self.data(Self.message([1, 2])))
        #expect(try Self.written(channel).count == 3, "call 3 arrived whole in time: answered")
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(50))
        let frames = try Self.written(channel)
        #expect(Self.status(frames)?.code == "4")
        #expect(Self.status(frames)?.message == "the request did not arrive whole within 100ms")
        #expect(frames.last.map { if case .rstStream = $0.payload { true } else { false } } == true)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(try Self.written(channel).isEmpty)
    }

    @Test("a frame left incomplete for the read timeout closes the connection; whole frames, however slow between them, do not")
    func readGuard() throws {
        func channel() throws -> EmbeddedChannel {
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandler(GRPCReadGuard(timeout: .milliseconds(100)))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            return channel
        }
        let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        let settings: [UInt8] = [0, 0, 0, 4, 0, 0, 0, 0, 0]
        let ping: [UInt8] = [0, 0, 8, 6, 0, 0, 0, 0, 0] + [UInt8](repeating: 7, count: 8)

        // Whole frames with long pauses between them: never cut (idleness is another timer's).
        let steady = try channel()
        try steady.writeInbound(ByteBuffer(bytes: preface + settings))
        steady.embeddedEventLoop.advanceTime(by: .seconds(1))
        try steady.writeInbound(ByteBuffer(bytes: ping))
        steady.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(steady.isActive)

        // A frame split over reads but finished in time: kept.
        let split = try channel()
        try split.writeInbound(ByteBuffer(bytes: preface + settings + ping.prefix(5)))
        split.embeddedEventLoop.advanceTime(by: .milliseconds(90))
        try split.writeInbound(ByteBuffer(bytes: ping.dropFirst(5)))
        split.embeddedEventLoop.advanceTime(by: .milliseconds(200))
        #expect(split.isActive)

        // Whole frames, then half a frame and silence: cut at 100 ms.
        let stuck = try channel()
        try stuck.writeInbound(ByteBuffer(bytes: preface + settings + ping + ping.prefix(12)))
        stuck.embeddedEventLoop.advanceTime(by: .milliseconds(99))
        #expect(stuck.isActive)
        stuck.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!stuck.isActive)

        // A frame a byte at a time: cut though bytes keep coming.
        let trickle = try channel()
        try trickle.writeInbound(ByteBuffer(bytes: preface + settings))
        for byte in ping {
            try? trickle.writeInbound(ByteBuffer(bytes: [byte]))
            trickle.embeddedEventLoop.advanceTime(by: .milliseconds(15))
        }
        #expect(!trickle.isActive)
    }

    @Test("the connection's window is topped up as bytes are read, and held while partial messages are over the budget")
    func flowControl() throws {
        let channel = try Self.channel(maxMessageBytes: 1 << 20, bufferBudget: 100)
        channel.pipeline.fireUserInboundEventTriggered(NIOHTTP2WindowUpdatedEvent(streamID: .rootStream, inboundWindowSize: 40_000, outboundWindowSize: 65_535))
        #expect(try Self.written(channel).isEmpty)
        channel.pipeline.fireUserInboundEventTriggered(NIOHTTP2WindowUpdatedEvent(streamID: .rootStream, inboundWindowSize: 30_000, outboundWindowSize: 65_535))
        channel.flush()
        var frames = try Self.written(channel)
        guard case .windowUpdate(let increment)? = frames.first?.payload else { Issue.record("\(frames)"); return }
        #expect(increment == 35_535)

        // 200 bytes of a message not yet whole: over the budget of 100.
        try Self.send(channel, 1, Self.headers())
        try Self.send(channel, 1, Self.data(Array(Self.message([UInt8](repeating: 1, count: 1_000)).prefix(200)), end: false))
        channel.pipeline.fireUserInboundEventTriggered(NIOHTTP2WindowUpdatedEvent(streamID: .rootStream, inboundWindowSize: 10_000, outboundWindowSize: 65_535))
        channel.flush()
        #expect(try Self.written(channel).isEmpty)
        // The stream is reset: its bytes are let go, and the window opens.
        try Self.send(channel, 1, .rstStream(.cancel))
        channel.flush()
        frames = try Self.written(channel)
        guard case .windowUpdate(let reopened)? = frames.first?.payload else { Issue.record("\(frames)"); return }
        #expect(reopened == 55_535)
    }
}
