import NIOCore
import NIOHTTP1

/// Sends an upstream request's head and body in one write: on each of the gateway's
/// AsyncHTTPClient connections, right after NIO's `HTTPRequestEncoder` (so it sees the
/// request's parts before they are encoded), it holds the flushes that come between
/// a request's head and its end.
///
/// AsyncHTTPClient flushes the head, then each body part, then the end, each on its own:
/// two or three `write` system calls and TCP segments per call where one does (on
/// loopback each costs the sender the receiver's network processing too). Held here,
/// a gateway call (whose body is one buffer, written in the same turn of the event loop
/// as the head) leaves in one `writev` when its end is flushed.
///
/// **Guarantee.** A write is never held past the event loop's current turn: the first
/// flush held schedules one that runs once the turn's events are handled, so a body
/// streamed from elsewhere (`--forward-unknown`) still goes out as it comes, and the
/// head of a request whose body is late still leaves at once. Writes and their promises
/// are untouched: only when the flush reaches the socket changes.
///
/// Not thread-safe, like every channel handler: one per connection, on its event loop.
final class RequestFlushCoalescer: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    /// Whether a request's head was written and its end not yet.
    private var inRequest = false
    /// Whether a flush was held.
    private var flushHeld = false
    /// Whether the end-of-turn flush is scheduled.
    private var flushScheduled = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head: inRequest = true
        case .body: break
        case .end: inRequest = false
        }
        context.write(data, promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        guard inRequest else {
            flushHeld = false
            context.flush()
            return
        }
        flushHeld = true
        guard !flushScheduled else { return }
        flushScheduled = true
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = loopBound.value
            handler.flushScheduled = false
            if handler.flushHeld {
                handler.flushHeld = false
                context.flush()
            }
        }
    }

    /// Adds a coalescer after the `HTTPRequestEncoder` of `channel` (an AsyncHTTPClient
    /// HTTP/1 connection: `http1_1ConnectionDebugInitializer`).
    static func install(on channel: any Channel) -> EventLoopFuture<Void> {
        channel.eventLoop.submit {
            let pipeline = channel.pipeline.syncOperations
            let encoder = try pipeline.handler(type: HTTPRequestEncoder.self)
            try pipeline.addHandler(RequestFlushCoalescer(), position: .after(encoder))
        }
    }
}
