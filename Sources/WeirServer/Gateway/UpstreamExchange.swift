import AsyncHTTPClient
import NIOCore
import NIOHTTP1

/// A whole upstream response: its head and its body.
struct UpstreamResponse: Sendable {
    var head: HTTPResponseHead
    var body: ByteBuffer
}

/// An AsyncHTTPClient delegate for one gateway call's upstream exchange, run on the
/// client connection's event loop (`Gateway.send`): it reads the response whole, or,
/// for a call that asked for a stream and got one (`text/event-stream`, status below
/// 400), relays it to the client event by event as it comes.
///
/// - **Whole**: up to `limit` bytes of body; more fails the request with
///   `Gateway.ResponseTooLarge` (the client stops reading and closes the connection).
/// - **Relayed**: each complete event is read for usage (`UsageMeter`), the gateway's own
///   usage-only chunk left out (`stripUsage`), and handed to the `sink`; the next body
///   part is read only once the sink has written the last (backpressure: a slow client
///   slows the upstream, and nothing piles up in memory). The lease's fallback follows
///   the usage seen, so a stream cut short settles with what went by.
/// - **Silence**: the upstream may be silent for `timeout` at most, until the head and
///   then between two body parts (`--upstream-timeout`); longer fails the request with
///   `HTTPClientError.readTimeout`. One timer per exchange, moved on lazily: a part that
///   arrives only records the time.
///
/// Concurrency: AsyncHTTPClient calls a delegate on one event loop only (the one given
/// with `.delegate(on:)`), one call at a time; `watch(_:on:)` is called on that loop too.
final class UpstreamExchange: HTTPClientResponseDelegate, @unchecked Sendable {
    /// What the exchange ends with.
    enum Response {
        /// The response, read whole.
        case whole(UpstreamResponse)
        /// A relayed stream ended; `rest` is what followed its last complete event.
        case relayed(rest: ByteBuffer)
    }

    /// The client side of a relayed stream.
    struct Sink {
        /// Writes the response head: the upstream's head (called once, before `send`).
        var begin: (HTTPResponseHead) -> Void
        /// Writes events; the future completes once they are written.
        var send: (ByteBuffer) -> EventLoopFuture<Void>
    }

    private let limit: Int
    private let timeout: TimeAmount
    private let sink: Sink?
    private let lease: GatewayLease?
    private let stripUsage: Bool
    private var head: HTTPResponseHead?
    private var body = ByteBuffer()
    /// The usage seen so far.
    private(set) var meter: UsageMeter
    private var parser = SSEParser()
    /// Whether the response is being relayed (its head has been written to the client).
    private(set) var isRelaying = false
    private var lastProgress = NIODeadline.now()
    private var silenceTimer: Scheduled<Void>?
    private var finished = false

    /// - Parameters:
    ///   - limit: the most body bytes read whole.
    ///   - timeout: the longest silence of the upstream.
    ///   - sink: where a stream goes; nil to read every response whole.
    init(limit: Int, timeout: TimeAmount, sink: Sink?, call: Gateway.AdmittedCall) {
        self.limit = limit
        self.timeout = timeout
        self.sink = sink
        self.lease = call.lease
        self.meter = call.meter
        self.stripUsage = call.stripUsage
    }

    /// Starts watching `task` for silence, on `loop` (the delegate's).
    func watch(_ task: HTTPClient.Task<Response>, on loop: any EventLoop) {
        lastProgress = .now()
        scheduleSilenceCheck(task, on: loop)
    }

    private func scheduleSilenceCheck(_ task: HTTPClient.Task<Response>, on loop: any EventLoop) {
        guard !finished else { return }
        silenceTimer = loop.scheduleTask(deadline: lastProgress + timeout) { [self] in
            if NIODeadline.now() >= lastProgress + timeout {
                task.fail(reason: HTTPClientError.readTimeout)
            } else {
                scheduleSilenceCheck(task, on: loop)
            }
        }
    }

    private func stopWatching() {
        finished = true
        silenceTimer?.cancel()
        silenceTimer = nil
    }

    func didReceiveHead(task: HTTPClient.Task<Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        lastProgress = .now()
        self.head = head
        if let sink, Gateway.isEventStream(head.headers), head.status.code < 400 {
            isRelaying = true
            sink.begin(head)
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Response>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        lastProgress = .now()
        if isRelaying, let sink {
            let events = parser.feed(buffer.readableBytesView)
            guard !events.isEmpty else { return task.eventLoop.makeSucceededVoidFuture() }
            var out = ByteBuffer()
            Gateway.pass(events, into: &out, meter: &meter, stripUsage: stripUsage)
            lease?.updateFallback(meter.interruptedUnits)
            return out.readableBytes > 0 ? sink.send(out) : task.eventLoop.makeSucceededVoidFuture()
        }
        guard body.readableBytes + buffer.readableBytes <= limit else {
            return task.eventLoop.makeFailedFuture(Gateway.ResponseTooLarge())
        }
        var buffer = buffer
        body.writeBuffer(&buffer)
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveError(task: HTTPClient.Task<Response>, _ error: any Error) {
        stopWatching()
    }

    func didFinishRequest(task: HTTPClient.Task<Response>) throws -> Response {
        stopWatching()
        guard let head else { throw HTTPClientError.remoteConnectionClosed }
        if isRelaying { return .relayed(rest: ByteBuffer(bytes: parser.pendingBytes)) }
        return .whole(UpstreamResponse(head: head, body: body))
    }
}
