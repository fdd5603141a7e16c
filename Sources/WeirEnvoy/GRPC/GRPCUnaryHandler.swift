import NIOCore
import NIOHPACK
import NIOHTTP2
import WeirPolicy

/// A unary gRPC method: the request message in, the response message or a status out.
///
/// `answer` is called on the connection's event loop. It answers `.ready` when it can
/// decide there and then (the in-memory store), so the call is answered without leaving
/// the loop; `.later` otherwise (Redis, or a call waiting for room), and its completion
/// may come from any thread. A method that may wait hands `cancellable` (called before
/// it returns, at most once) what to cancel when the call ends unanswered: the stream
/// reset, its deadline passed, the connection closed.
public struct GRPCUnaryMethod: Sendable {
    public typealias Answer = @Sendable (_ message: ByteBuffer, _ cancellable: (WaitCancellation) -> Void)
        -> Pending<Result<[UInt8], GRPCStatus>>

    public let answer: Answer

    public init(answer: @escaping Answer) {
        self.answer = answer
    }
}

/// Serves unary gRPC methods on the frames of one HTTP/2 connection, without a child
/// channel, task or hop per call.
///
/// It sits after `NIOHTTP2Handler` (which keeps HTTP/2's own rules: the connection's
/// state, HPACK, stream limits, the outbound flow control windows) and keeps gRPC's:
///
/// - **Requests**: `POST` with a `content-type` of `application/grpc` (else HTTP 405 or
///   415); the `:path` names the method, an unknown one ends with `UNIMPLEMENTED`; one
///   length-prefixed message (`GRPCRequestReader`: none or two is `UNIMPLEMENTED`, over
///   `maxMessageBytes` is `RESOURCE_EXHAUSTED` as soon as its prefix is read, a
///   compressed one is `UNIMPLEMENTED` with `grpc-accept-encoding: identity`).
/// - **Answers**: `:status 200` and `content-type: application/grpc`, the response
///   message, then `grpc-status: 0` as a trailer; an error is a trailers-only answer with
///   `grpc-status` and a percent-encoded `grpc-message`. When the caller has not ended its
///   side yet, `RST_STREAM(NO_ERROR)` follows, so that it stops sending.
/// - **Deadlines**: a `grpc-timeout` starts a timer, but only for a call still unanswered
///   when the read that brought it is done (a decision made in memory never needs one);
///   when it fires the call ends with `DEADLINE_EXCEEDED` and is reset. A decision that
///   comes later for a call that has ended (deadline, reset, closed connection) is dropped,
///   and a call waiting for room (the method handed its `WaitCancellation`) is cancelled
///   then, so that it holds nothing.
/// - **Slow requests**: a call whose request has not arrived whole within
///   `requestReadTimeout` of its headers ends with `DEADLINE_EXCEEDED` and is reset (its
///   timer, too, only for a call still being read when a read ends); a frame that stays
///   incomplete is `GRPCReadGuard`'s.
/// - **Inbound flow control**: the connection's receive window is topped up as bytes are
///   read, while the bytes held for messages not yet whole stay under `bufferBudget`; a
///   stream's window is topped up while its message is being read. So one connection
///   holds at most `bufferBudget` plus one window and one message of request bytes.
///
/// Not thread-safe, like every channel handler: one per connection, on its event loop.
final class GRPCUnaryHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// One call in flight.
    private struct Call {
        var method: GRPCUnaryMethod
        var reader: GRPCRequestReader
        /// When the caller stops waiting (`grpc-timeout`), if it said.
        var deadline: NIODeadline?
        /// When the request must have arrived whole (`requestReadTimeout`).
        var readDeadline: NIODeadline?
        var timer: Scheduled<Void>?
        /// Whether the caller has ended its side of the stream.
        var requestEnded = false
        /// Whether the method has been asked (the answer comes later).
        var deciding = false
        /// What the method asked to cancel should the call end unanswered.
        var cancellation: WaitCancellation?
    }

    private let methods: [String: GRPCUnaryMethod]
    /// How long a call's request may take to arrive whole; nil for as long as it takes.
    private let requestReadTimeout: TimeAmount?
    /// Tells a connection's error (GOAWAY sent) from a stream's.
    private let goAways: GoAwayWatch
    private let maxMessageBytes: Int
    private let bufferBudget: Int
    /// The receive window kept open, for the connection and for each stream (bytes).
    private let windowTarget: Int
    private var calls: [HTTP2StreamID: Call] = [:]
    /// Calls begun in the read under way with a deadline or a read deadline: given a
    /// timer at its end if still unanswered.
    private var unscheduled: [HTTP2StreamID] = []
    /// Request bytes held for messages not yet whole, over every call.
    private var bufferedBytes = 0
    /// The connection's receive window as last reported.
    private var connectionWindow: Int
    private var needsFlush = false
    private var context: ChannelHandlerContext?

    /// - Parameters:
    ///   - methods: the methods served, by path (`/package.Service/Method`).
    ///   - maxMessageBytes: the longest request message taken.
    ///   - bufferBudget: the request bytes one connection may hold for messages not yet
    ///     whole before its receive window stops being topped up.
    ///   - windowTarget: the receive window kept open (HTTP/2's default is 65,535).
    ///   - goAways: the frame delegate of this connection's `NIOHTTP2Handler`.
    init(
        methods: [String: GRPCUnaryMethod], maxMessageBytes: Int, goAways: GoAwayWatch, bufferBudget: Int = 4 << 20,
        windowTarget: Int = 65_535, requestReadTimeout: TimeAmount? = nil
    ) {
        self.methods = methods
        self.requestReadTimeout = requestReadTimeout
        self.goAways = goAways
        self.maxMessageBytes = maxMessageBytes
        self.bufferBudget = bufferBudget
        self.windowTarget = windowTarget
        self.connectionWindow = windowTarget
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: - Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case .headers(let headers):
            if calls[frame.streamID] != nil {
                // Trailers from the caller: only their end matters.
                if headers.endStream { requestEnded(frame.streamID, context: context) }
            } else {
                begin(frame.streamID, headers: headers.headers, endStream: headers.endStream, context: context)
            }
        case .data(let data):
            guard var call = calls[frame.streamID] else { return }
            guard case .byteBuffer(let bytes) = data.data else { return }
            let before = call.reader.bufferedBytes
            let failure: GRPCRequestReader.Failure?
            do {
                try call.reader.append(bytes)
                failure = nil
            } catch {
                failure = error
            }
            bufferedBytes += call.reader.bufferedBytes - before
            calls[frame.streamID] = call
            if let failure {
                end(frame.streamID, with: failure.status, context: context)
            } else if data.endStream {
                requestEnded(frame.streamID, context: context)
            }
        case .rstStream:
            forget(frame.streamID)
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        for id in unscheduled {
            guard let call = calls[id], call.timer == nil else { continue }
            // The read deadline matters only while the request is still coming.
            let readDeadline = call.requestEnded ? nil : call.readDeadline
            let deadline: NIODeadline
            switch (call.deadline, readDeadline) {
            case (let own?, let read?): deadline = min(own, read)
            case (let own?, nil): deadline = own
            case (nil, let read?): deadline = read
            case (nil, nil): continue
            }
            let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            calls[id]?.timer = context.eventLoop.scheduleTask(deadline: deadline) {
                loopBound.value.deadlinePassed(id)
            }
        }
        unscheduled.removeAll(keepingCapacity: true)
        flushIfNeeded(context: context)
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let closed as StreamClosedEvent:
            forget(closed.streamID)
        case let window as NIOHTTP2WindowUpdatedEvent:
            guard let inbound = window.inboundWindowSize else { break }
            if window.streamID == .rootStream {
                connectionWindow = inbound
                topUpConnectionWindow(context: context)
            } else if inbound < windowTarget / 2, let call = calls[window.streamID], !call.deciding, !call.requestEnded {
                // A message longer than a window: let the rest of it come.
                writeWindowUpdate(window.streamID, increment: windowTarget - inbound, context: context)
            }
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        for call in calls.values {
            call.timer?.cancel()
            call.cancellation?.cancel()
        }
        calls.removeAll()
        bufferedBytes = 0
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A stream's error ends that stream only: NIOHTTP2Handler has reset it, and its
        // call is forgotten when it closes. A connection's error (NIOHTTP2Handler has
        // sent GOAWAY with an error code) closes the connection.
        if goAways.sentError { context.close(promise: nil) }
    }

    // MARK: - Calls

    /// A new stream's request headers.
    private func begin(_ id: HTTP2StreamID, headers: HPACKHeaders, endStream: Bool, context: ChannelHandlerContext) {
        var path = ""
        var method = ""
        var contentType = ""
        var timeout: String?
        for (name, value, _) in headers {
            switch name {
            case ":path": path = value
            case ":method": method = value
            case "content-type": contentType = value
            case "grpc-timeout": timeout = value
            default: continue
            }
        }
        guard method == "POST" else {
            answerHTTP(id, status: "405", GRPCStatus(.internal, "gRPC calls are POST requests, not \(method)"), requestEnded: endStream, context: context)
            return
        }
        guard contentType.hasPrefix("application/grpc") else {
            answerHTTP(id, status: "415", GRPCStatus(.internal, "content-type must be application/grpc, not \(contentType)"), requestEnded: endStream, context: context)
            return
        }
        guard let unary = methods[path] else {
            answerHTTP(id, status: "200", GRPCStatus(.unimplemented, "unknown method \(path)"), requestEnded: endStream, context: context)
            return
        }
        var call = Call(method: unary, reader: GRPCRequestReader(maxMessageBytes: maxMessageBytes))
        if let requestReadTimeout, !endStream {
            call.readDeadline = context.eventLoop.now + requestReadTimeout
            unscheduled.append(id)
        }
        if let timeout {
            guard let nanoseconds = GRPCTimeout.nanoseconds(timeout) else {
                answerHTTP(id, status: "200", GRPCStatus(.internal, "grpc-timeout \(timeout) is not 1 to 8 digits and a unit (H, M, S, m, u, n)"), requestEnded: endStream, context: context)
                return
            }
            // A day or more is as good as none (and beyond NIODeadline's range at most).
            if nanoseconds < Self.longestTimeout {
                call.deadline = context.eventLoop.now + .nanoseconds(Int64(nanoseconds))
                if call.readDeadline == nil { unscheduled.append(id) }
            }
        }
        calls[id] = call
        if endStream { requestEnded(id, context: context) }
    }

    /// The caller has ended its side: the message is decided.
    private func requestEnded(_ id: HTTP2StreamID, context: ChannelHandlerContext) {
        guard var call = calls[id], !call.deciding else { return }
        call.requestEnded = true
        let message: ByteBuffer
        do {
            message = try call.reader.finish()
        } catch {
            calls[id] = call
            end(id, with: error.status, context: context)
            return
        }
        call.deciding = true
        calls[id] = call
        let pending = call.method.answer(message) { cancellation in self.calls[id]?.cancellation = cancellation }
        switch pending {
        case .ready(let result):
            answer(id, result, context: context)
        case .later(let wait):
            let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let eventLoop = context.eventLoop
            wait { result in
                eventLoop.execute {
                    let handler = loopBound.value
                    guard let context = handler.context else { return }
                    handler.answer(id, result, context: context)
                    handler.flushIfNeeded(context: context)
                }
            }
        }
    }

    private func deadlinePassed(_ id: HTTP2StreamID) {
        guard let context, let call = calls[id] else { return }
        calls[id]?.timer = nil
        let now = context.eventLoop.now
        let status: GRPCStatus
        if !call.requestEnded, let readDeadline = call.readDeadline, readDeadline <= now {
            status = GRPCStatus(.deadlineExceeded, "the request did not arrive whole within \(Self.shown(requestReadTimeout))")
        } else if let deadline = call.deadline, deadline <= now {
            status = GRPCStatus(.deadlineExceeded, "the call's grpc-timeout passed before it was answered")
        } else {
            // The read deadline passed after the request ended: the timer moves to the
            // call's own deadline, if it has one.
            if let deadline = call.deadline {
                let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
                calls[id]?.timer = context.eventLoop.scheduleTask(deadline: deadline) { loopBound.value.deadlinePassed(id) }
            }
            return
        }
        end(id, with: status, context: context)
        flushIfNeeded(context: context)
    }

    private static func shown(_ amount: TimeAmount?) -> String {
        guard let amount else { return "its time" }
        let milliseconds = amount.nanoseconds / 1_000_000
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000)s" : "\(milliseconds)ms"
    }

    /// Drops a call that has ended without an answer from here (reset, closed).
    private func forget(_ id: HTTP2StreamID) {
        _ = take(id)
    }

    /// Takes a call out: its timer stops, a wait it is in ends (nothing once it has
    /// been answered), and the bytes it held are let go. The one way a call leaves an
    /// open connection (`channelInactive` drops them all).
    private func take(_ id: HTTP2StreamID) -> Call? {
        guard let call = calls.removeValue(forKey: id) else { return nil }
        call.timer?.cancel()
        call.cancellation?.cancel()
        release(call.reader.bufferedBytes)
        return call
    }

    // MARK: - Writing

    /// Timeouts this long or longer (nanoseconds) start no timer: a day.
    private static let longestTimeout: UInt64 = 86_400 * 1_000_000_000

    private static let responseHeaders: HPACKHeaders = [":status": "200", "content-type": "application/grpc"]
    private static let okTrailers: HPACKHeaders = ["grpc-status": "0"]

    /// Answers a call whose method has answered.
    private func answer(_ id: HTTP2StreamID, _ result: Result<[UInt8], GRPCStatus>, context: ChannelHandlerContext) {
        switch result {
        case .failure(let status):
            end(id, with: status, context: context)
        case .success(let message):
            guard take(id) != nil else { return }
            var buffer = context.channel.allocator.buffer(capacity: 5 + message.count)
            buffer.writeInteger(UInt8(0))
            buffer.writeInteger(UInt32(message.count))
            buffer.writeBytes(message)
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: Self.responseHeaders)))), promise: nil)
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(buffer))))), promise: nil)
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: Self.okTrailers, endStream: true)))), promise: nil)
            needsFlush = true
        }
    }

    /// Ends a call with `status` (a trailers-only answer), and resets its stream when
    /// the caller is still sending.
    private func end(_ id: HTTP2StreamID, with status: GRPCStatus, context: ChannelHandlerContext) {
        guard let call = take(id) else { return }
        answerHTTP(id, status: "200", status, requestEnded: call.requestEnded, context: context)
    }

    /// A trailers-only answer with HTTP status `httpStatus`.
    private func answerHTTP(
        _ id: HTTP2StreamID, status httpStatus: String, _ status: GRPCStatus, requestEnded: Bool, context: ChannelHandlerContext
    ) {
        var headers: HPACKHeaders = [":status": httpStatus, "content-type": "application/grpc"]
        headers.add(name: "grpc-status", value: String(status.code.rawValue))
        if !status.message.isEmpty { headers.add(name: "grpc-message", value: status.encodedMessage) }
        if let acceptEncoding = status.acceptEncoding {
            headers.add(name: "grpc-accept-encoding", value: acceptEncoding)
        }
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers, endStream: true)))), promise: nil)
        if !requestEnded {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(.noError))), promise: nil)
        }
        needsFlush = true
    }

    private func flushIfNeeded(context: ChannelHandlerContext) {
        guard needsFlush else { return }
        needsFlush = false
        context.flush()
    }

    // MARK: - Flow control

    /// Bytes no longer held for a message; the connection's window may open again.
    private func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        bufferedBytes -= bytes
        if let context { topUpConnectionWindow(context: context) }
    }

    private func topUpConnectionWindow(context: ChannelHandlerContext) {
        guard connectionWindow < windowTarget / 2, bufferedBytes <= bufferBudget else { return }
        let increment = windowTarget - connectionWindow
        connectionWindow = windowTarget
        writeWindowUpdate(.rootStream, increment: increment, context: context)
    }

    private func writeWindowUpdate(_ id: HTTP2StreamID, increment: Int, context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
        needsFlush = true
    }
}
