import NIOCore
import WeirAnswers

/// The first handler of an HTTP connection (before NIO's decoder): keeps the time limits
/// of `ConnectionLimits`, on the connection's event loop.
///
/// - **Idle.** When `DecisionFastPath` says the connection is quiet (nothing open or
///   pending), its idle time starts; any byte from the client ends it; after
///   `idleTimeout` of it, the connection is closed.
/// - **Slow requests.** The first byte of a request starts its read time; the request's
///   end (`requestRead()`, from the fast path, for every request) ends it. After
///   `requestReadTimeout` of it while nothing is being answered, the client gets 408 and
///   the connection is closed; while an earlier answer is still being written (a
///   pipelined request behind a stream), the wait starts again, since the slow request
///   cannot be answered before that one anyway.
///
/// Not thread-safe, like every channel handler: one per connection, used on its event
/// loop only.
final class ConnectionGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = IOData

    private let limits: ConnectionLimits
    /// Whether a request has begun (bytes read) and not yet ended, and since when.
    private var reading = false
    private var readingSince = NIODeadline.uptimeNanoseconds(0)
    /// Whether the fast path has nothing open or pending (set by `quiet()`, cleared by
    /// bytes), and since when.
    private var isQuiet = false
    private var quietSince = NIODeadline.uptimeNanoseconds(0)
    /// At most one timer of each kind per connection, moved on lazily: a request or an
    /// answer only records the time, so a busy keep-alive connection arms a timer once
    /// per timeout rather than once per request.
    private var readTimer: Scheduled<Void>?
    private var idleTimer: Scheduled<Void>?
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
        if !reading {
            reading = true
            readingSince = .now()
            if readTimer == nil { armReadTimer(at: readingSince + timeAmount(limits.requestReadTimeout), context: context) }
        }
        context.fireChannelRead(data)
    }

    /// The request being read has ended (its last part decoded).
    func requestRead() {
        reading = false
    }

    /// Nothing is open or pending on the connection: the idle time starts.
    func quiet() {
        guard let context, !reading, !isQuiet, context.channel.isActive else { return }
        isQuiet = true
        quietSince = .now()
        if idleTimer == nil { armIdleTimer(at: quietSince + timeAmount(limits.idleTimeout), context: context) }
    }

    /// Whether an answer is still being written; the fast path tells.
    var answering: () -> Bool = { false }

    private func timeAmount(_ nanoseconds: UInt64) -> TimeAmount {
        .nanoseconds(Int64(clamping: nanoseconds))
    }

    private func armIdleTimer(at deadline: NIODeadline, context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = bound.value
            handler.idleTimer = nil
            guard handler.isQuiet else { return }  // the next quiet() arms it again
            let due = handler.quietSince + handler.timeAmount(handler.limits.idleTimeout)
            if NIODeadline.now() >= due {
                context.close(promise: nil)
            } else {
                handler.armIdleTimer(at: due, context: context)
            }
        }
    }

    private func armReadTimer(at deadline: NIODeadline, context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        readTimer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = bound.value
            handler.readTimer = nil
            guard handler.reading else { return }  // the next request's first byte arms it again
            let due = handler.readingSince + handler.timeAmount(handler.limits.requestReadTimeout)
            if NIODeadline.now() < due {
                handler.armReadTimer(at: due, context: context)
            } else if handler.answering() {
                // The slow request cannot be answered before the earlier one anyway.
                handler.armReadTimer(at: .now() + handler.timeAmount(handler.limits.requestReadTimeout), context: context)
            } else {
                handler.refuseSlowRequest(context: context)
            }
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
