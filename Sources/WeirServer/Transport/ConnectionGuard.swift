import NIOCore
import WeirAnswers

/// The first handler of an HTTP connection (before NIO's decoder): keeps the time limits
/// of `ConnectionLimits`, on the connection's event loop.
///
/// - **Idle.** When `DecisionFastPath` says the connection is quiet (nothing open or
///   pending), a timer of `idleTimeout` starts; any byte from the client stops it; when
///   it fires, the connection is closed.
/// - **Slow requests.** The first byte of a request starts a timer of
///   `requestReadTimeout`; the request's end (`requestRead()`, from the fast path, for
///   every request) stops it. When it fires while nothing is being answered, the client
///   gets 408 and the connection is closed; while an earlier answer is still being
///   written (a pipelined request behind a stream), the timer starts again, since the
///   slow request cannot be answered before that one anyway.
///
/// Not thread-safe, like every channel handler: one per connection, used on its event
/// loop only.
final class ConnectionGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = IOData

    private let limits: ConnectionLimits
    /// Whether a request has begun (bytes read) and not yet ended.
    private var reading = false
    private var readTimer: Scheduled<Void>?
    private var idleTimer: Scheduled<Void>?
    /// Whether the fast path has nothing open or pending (set by `quiet()`, cleared by bytes).
    private var isQuiet = false
    private var context: ChannelHandlerContext?

    init(limits: ConnectionLimits) {
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimers()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        quiet()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimers()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        isQuiet = false
        idleTimer?.cancel()
        idleTimer = nil
        if !reading {
            reading = true
            armReadTimer(context: context)
        }
        context.fireChannelRead(data)
    }

    /// The request being read has ended (its last part decoded).
    func requestRead() {
        reading = false
        readTimer?.cancel()
        readTimer = nil
    }

    /// Nothing is open or pending on the connection: the idle timer starts.
    func quiet() {
        guard let context, !reading, idleTimer == nil, context.channel.isActive else { return }
        isQuiet = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(clamping: limits.idleTimeout))) {
            let (handler, context) = bound.value
            handler.idleTimer = nil
            guard handler.isQuiet else { return }
            context.close(promise: nil)
        }
    }

    /// Whether an answer is still being written; the fast path tells.
    var answering: () -> Bool = { false }

    private func armReadTimer(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        readTimer = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(clamping: limits.requestReadTimeout))) {
            let (handler, context) = bound.value
            handler.readTimer = nil
            guard handler.reading else { return }
            if handler.answering() {
                handler.armReadTimer(context: context)
                return
            }
            handler.refuseSlowRequest(context: context)
        }
    }

    /// 408 with the decision API's error body, then close.
    private func refuseSlowRequest(context: ChannelHandlerContext) {
        let seconds = Double(limits.requestReadTimeout) / 1e9
        let error = APIError(
            status: .requestTimeout, code: "request_timeout",
            message: "the request did not arrive whole within \(seconds) s of its first byte")
        let body = Array(error.json.utf8)
        var head = "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        head += "Connection: close\r\nDate: \(HTTPDate.now())\r\n\r\n"
        var buffer = context.channel.allocator.buffer(capacity: head.utf8.count + body.count)
        buffer.writeString(head)
        buffer.writeBytes(body)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(buffer))).whenComplete { _ in bound.value.close(promise: nil) }
    }

    private func cancelTimers() {
        readTimer?.cancel()
        readTimer = nil
        idleTimer?.cancel()
        idleTimer = nil
    }
}
