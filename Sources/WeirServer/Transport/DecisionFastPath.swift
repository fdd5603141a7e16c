import AsyncHTTPClient
import Foundation
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Synchronization
import WeirAnswers
import WeirEnvoy
import WeirPolicy

/// The server's HTTP/1 channel: Hummingbird's, with `DecisionFastPath` in front of its
/// request handling.
///
/// The pipeline is NIO's HTTP/1 decoder, `DecisionFastPath`, NIO's HTTP/1 encoder,
/// `ForwardedResponseObserver`, then what Hummingbird's `HTTP1Channel` sets up
/// (conversion to HTTP types, connection state, the async channel its router reads).
/// Same behaviour as `HTTP1Channel` for every request the fast path does not answer.
struct DecisionChannel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    let responder: Responder
    let service: WeirService
    /// The gateway (`--upstream`), whose calls the fast path serves too.
    var gateway: Gateway?
    /// What one client may hold of the port.
    var limits: ConnectionLimits
    /// The connections open on the port, shared by every connection.
    let connections: ConnectionCount

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        // Beyond `maxConnections`, a connection is closed as it is accepted.
        guard connections.open(channel, limit: limits.maxConnections) else {
            logger.debug("connection refused: \(limits.maxConnections) connections open")
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
        }
        return channel.eventLoop.makeCompletedFuture {
            // NIO's HTTP/1 decoder and encoder as `configureHTTPServerPipeline` sets them
            // up (no pipelining assistance, no error handling, no outbound header
            // validation: Hummingbird's choices), but apart, so that the fast path sits
            // between them: it reads decoded requests and writes encoded bytes. The
            // connection guard, first, keeps the idle and slow-request time limits.
            let connectionGuard = ConnectionGuard(limits: limits)
            let fastPath = DecisionFastPath(service: service, gateway: gateway, limits: limits, guard: connectionGuard)
            try channel.pipeline.syncOperations.addHandlers([
                connectionGuard,
                ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)),
                fastPath,
                HTTPResponseEncoder(configuration: .init()),
                ForwardedResponseObserver(fastPath: fastPath),
                HTTP1ToHTTPServerCodec(secure: false),
                HTTPConnectionStateHandler(idleTimeout: nil, logger: logger),
            ])
            return try NIOAsyncChannel(
                wrappingChannelSynchronously: channel,
                configuration: .init(isOutboundHalfClosureEnabled: true))
        }
    }

    func handle(value asyncChannel: Value, logger: Logger) async {
        await handleHTTP(asyncChannel: asyncChannel, logger: logger)
    }
}

/// Answers `POST /v1/acquire` and `POST /v1/settle` on the event loop, right after
/// NIO's HTTP/1 decoder, without the hop into Swift concurrency (and the conversions
/// to and from HTTP types, and the response encoder) that a Hummingbird route costs
/// per request.
///
/// **A transport, not a second decision.** A decision request is collected here, decided
/// through the same `WeirService.acquire` / `settle` (and so the same `Limiter`) as the
/// Hummingbird routes, which stay registered for in-process clients, and its answer is
/// written back as one buffer of HTTP/1.1 bytes (status line, headers, body); the request
/// never reaches the router. Everything else (admin, operations, other methods and
/// paths) goes on to Hummingbird unchanged. What is read, queued and forwarded, in what
/// order, is `DecisionConnection`'s to say; this handler performs its actions.
///
/// **Gateway.** With `--upstream`, every call on a path of the gateway's table (a query
/// string passed on) is served here: prepared, decided and admitted (`Gateway.prepare`,
/// the limiter, `Gateway.admit`), sent upstream with AsyncHTTPClient on this channel's
/// event loop (`Gateway.send`), its lease settled from the response, and the response
/// written back, all without leaving the loop. A call that asked for a stream and gets
/// one is relayed as it comes, in chunked transfer coding (HTTP/1.0: until the connection
/// closes), each write waited for before the upstream is read further; a stream cut short
/// ends the connection abruptly, and a client gone mid-stream cancels the upstream
/// exchange (its lease settled with what went by). While a call is upstream, whatever
/// else arrives on the connection (HTTP pipelining) waits, and is handled in order once
/// the answer is written.
///
/// **Both stores, one path.** The limiter answers `Pending`: with the in-memory store
/// `.ready`, written at once on this event loop (no closure, task or hop); with Redis
/// `.later`, written on this event loop when Redis has answered. While a decision is in
/// flight, what else arrives on the connection waits, as behind a gateway call.
///
/// **Order.** While a request forwarded to Hummingbird has not been answered (HTTP
/// pipelining), a request of the fast path waits for that answer, so responses always
/// leave in request order.
///
/// **Limits.** A body over the service's limit (declared by `Content-Length` or found
/// while reading) is answered 413 at once and the connection closed, since the rest of
/// the body cannot be told from a next request without reading it. A request that is
/// not keep-alive (`Connection: close`, HTTP/1.0) is answered and the connection closed.
///
/// Not thread-safe, like every channel handler: one instance per connection, used on
/// its event loop only.
final class DecisionFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    enum Route {
        case acquire
        case settle
        case gateway(GatewayRoute)
    }

    private let service: WeirService
    private let gateway: Gateway?
    /// The gateway's table by path (empty without a gateway).
    private let gatewayRoutes: [String: GatewayRoute]
    /// What is read, collected, forwarded, queued and decided (no I/O of its own).
    private var connection: DecisionConnection<Route>
    /// Whether the parts that waited are being read again (an answer written meanwhile
    /// does not start a second, nested pass).
    private var replaying = false
    /// Whether answers were written since the last flush.
    private var needsFlush = false
    /// Whether a flush is scheduled for the end of the event loop's round.
    private var flushScheduled = false
    /// Keeps the connection's time limits; told when a request has been read whole and
    /// when nothing is pending.
    private let connectionGuard: ConnectionGuard
    /// This handler's context, to go on with a held request when Hummingbird's answer
    /// ahead of it has been written.
    private var context: ChannelHandlerContext?
    /// The upstream exchange of a streaming gateway call in flight, cancelled when the
    /// client goes away.
    private var stream: HTTPClient.Task<UpstreamExchange.Response>?
    /// Whether the stream being relayed is in chunked transfer coding (else HTTP/1.0's
    /// body up to the connection's close).
    private var streamIsChunked = false
    /// Whether the gateway call last sent upstream has ended.
    private var callEnded = true
    /// Whether a read from the socket was held back while the queue was full.
    private var readHeld = false
    /// Cancelled when the connection closes: a decision waiting for room (`max_wait_ms`)
    /// stops waiting. One per connection: one decision is in flight on it at a time.
    private lazy var waitCancellation = WaitCancellation()

    init(service: WeirService, gateway: Gateway?, limits: ConnectionLimits, guard connectionGuard: ConnectionGuard) {
        self.service = service
        self.gateway = gateway
        self.connectionGuard = connectionGuard
        var routes: [String: GatewayRoute] = [:]
        if gateway != nil {
            for route in GatewayRoute.all { routes[route.path] = route }
        }
        self.gatewayRoutes = routes
        self.connection = DecisionConnection(maxBodySize: service.maxBodySize, limits: limits, allocator: ByteBufferAllocator())
        connectionGuard.answering = { [weak self] in
            guard let self else { return false }
            return self.connection.isAnsweringEarlier || self.stream != nil
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        read(unwrapInboundIn(data), context: context)
    }

    private func read(_ part: HTTPServerRequestPart, context: ChannelHandlerContext, replayed: Bool = false) {
        if !replayed, case .end = part { connectionGuard.requestRead() }
        let gatewayRoutes = self.gatewayRoutes
        let action = connection.read(part) { head in
            switch head.uri {
            case "/v1/acquire": .acquire
            case "/v1/settle": .settle
            default: Self.gatewayRoute(head.uri, in: gatewayRoutes).map { .gateway($0) }
            }
        }
        perform(action, context: context)
    }

    private func perform(_ action: DecisionConnection<Route>.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .forward(let part):
            context.fireChannelRead(wrapInboundOut(part))
        case .refuseTooLarge(.gateway(let route), let head):
            let refusal = GatewayErrors.response(APIError.bodyTooLarge(limit: service.maxBodySize), dialect: route.dialect)
            write(refusal, context: context, head: head, close: true)
        case .refuseTooLarge(_, let head):
            write(DecisionAnswer(APIError.bodyTooLarge(limit: service.maxBodySize)), context: context, head: head, close: true)
        case .refuseHeaders(let head):
            let limits = connection.limits
            let error = APIError(
                status: .requestHeaderFieldsTooLarge, code: "headers_too_large",
                message: "the request's header fields are over the limits: \(limits.maxHeaderCount) fields, \(limits.maxHeaderBytes) bytes")
            write(DecisionAnswer(error), context: context, head: head, close: true)
        case .decide(let route, let head, var body):
            let bytes = body.readBytes(length: body.readableBytes) ?? []
            switch route {
            case .acquire: answer(service.acquire(bytes, cancellation: waitCancellation), head: head, context: context)
            case .settle: answer(service.settle(bytes), head: head, context: context)
            case .gateway(let gatewayRoute): call(gatewayRoute, head: head, bytes: bytes, context: context)
            }
        }
    }

    /// The gateway route of a request target: a path of the table, with or without a query.
    private static func gatewayRoute(_ uri: String, in routes: [String: GatewayRoute]) -> GatewayRoute? {
        if let route = routes[uri] { return route }
        guard let query = uri.firstIndex(of: "?") else { return nil }
        return routes[String(uri[..<query])]
    }

    /// A request NIO's parser cannot read (a head over its 80 KiB, bytes that are not
    /// HTTP): 431 or 400 when nothing is being answered, and the connection closes.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        guard connection.isQuiet, stream == nil else {
            context.close(promise: nil)
            return
        }
        let answer = parserError == .headerOverflow
            ? APIError(status: .requestHeaderFieldsTooLarge, code: "headers_too_large", message: "the request's head is over 80 KiB")
            : APIError(status: .badRequest, code: "invalid_http", message: "the request is not valid HTTP/1.1: \(parserError)")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: ["connection": "close"])
        write(DecisionAnswer(answer), context: context, head: head, close: true)
    }

    /// Holds reads from the socket back while the parts queued behind a request being
    /// answered are over `ConnectionLimits.maxQueuedBytes`; `resume` lets them go.
    func read(context: ChannelHandlerContext) {
        if connection.queueIsFull {
            readHeld = true
            return
        }
        context.read()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // A client gone mid-stream: the upstream exchange ends now, and its lease is
        // settled with what went by (`Gateway.send`). A client gone while its decision
        // waits for room: it stops waiting.
        stream?.cancel()
        waitCancellation.cancel()
        context.fireChannelInactive()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushAfterThisTick(context: context)
        context.fireChannelReadComplete()
    }

    /// Called by `ForwardedResponseObserver` when Hummingbird has written the end of a
    /// response to a forwarded request: a request held behind it goes on, once this
    /// write (made from Hummingbird's side of the pipeline) has returned.
    func forwardedResponseEnded(context: ChannelHandlerContext) {
        guard connection.forwardedResponseEnded() else {
            if connection.isQuiet && stream == nil { connectionGuard.quiet() }
            return
        }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            guard let context = loopBound.value.context else { return }
            loopBound.value.resume(context: context)
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: - Gateway calls

    /// A gateway call whose body has been read: answered at once when it is refused or
    /// malformed; otherwise sent upstream, and answered when the upstream has.
    private func call(_ route: GatewayRoute, head: HTTPRequestHead, bytes: [UInt8], context: ChannelHandlerContext) {
        guard let gateway else { preconditionFailure("a gateway route on a server without a gateway") }
        let prepared: Gateway.PreparedCall
        do {
            // Several `Authorization` fields read as one value, joined as HTTPFields
            // joins them (which makes no valid key).
            let authorization = head.headers["authorization"]
            prepared = try gateway.prepare(
                authorization: authorization.isEmpty ? nil : authorization.joined(separator: ", "), bytes: bytes,
                route: route, maxWait: head.headers.first(name: Gateway.maxWaitHeader))
        } catch {
            done(GatewayErrors.response(error, dialect: route.dialect), head: head, context: context)
            return
        }
        let decided = gateway.service.limiter.acquire(
            prepared.resolution, units: prepared.estimate.total, leaseTTL: gateway.configuration.leaseTTL,
            model: prepared.model, maxWait: prepared.maxWait, cancellation: waitCancellation)
        switch decided {
        case .ready(let result):
            decidedCall(result, prepared: prepared, gateway: gateway, route: route, head: head, context: context)
        case .later(let wait):
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let eventLoop = context.eventLoop
            wait { result in
                Self.onLoop(eventLoop) {
                    let (handler, context) = loopBound.value
                    handler.decidedCall(result, prepared: prepared, gateway: gateway, route: route, head: head, context: context)
                }
            }
        }
    }

    private func decidedCall(
        _ result: Result<LimitedDecision, any Error>, prepared: Gateway.PreparedCall, gateway: Gateway, route: GatewayRoute,
        head: HTTPRequestHead, context: ChannelHandlerContext
    ) {
        switch result {
        case .success(let limited):
            admitted(gateway.admit(prepared, decision: limited), gateway: gateway, route: route, head: head, context: context)
        case .failure(is WaitCancelled):
            // The client went away while its call waited for room: nothing to answer.
            context.close(promise: nil)
        case .failure(let error):
            done(GatewayErrors.response(gateway.service.storeError(error), dialect: route.dialect), head: head, context: context)
        }
    }

    /// Goes on with a decided gateway call: a denial is answered; an admitted call is
    /// sent upstream on this event loop and answered when the upstream has.
    private func admitted(
        _ admission: Gateway.Admission, gateway: Gateway, route: GatewayRoute, head: HTTPRequestHead,
        context: ChannelHandlerContext
    ) {
        let admitted: Gateway.AdmittedCall
        switch admission {
        case .admitted(let call): admitted = call
        case .denied(let answer):
            done(answer, head: head, context: context)
            return
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        var sink: UpstreamExchange.Sink?
        if admitted.streaming {
            sink = UpstreamExchange.Sink(
                begin: { response in
                    let (handler, context) = loopBound.value
                    handler.beginStream(response, gateway: gateway, limited: admitted.limited, context: context, head: head)
                },
                send: { events in
                    let (handler, context) = loopBound.value
                    return handler.relay(events, context: context)
                })
        }
        // One gateway call is in flight per connection at a time; its outcome may come
        // before `send` returns (a call that fails at once).
        callEnded = false
        let task = gateway.send(
            admitted, uri: head.uri, headers: head.headers, dialect: route.dialect, on: context.eventLoop, sink: sink
        ) { outcome in
            let (handler, context) = loopBound.value
            handler.stream = nil
            handler.callEnded = true
            switch outcome {
            case .upstream(let response, let headers):
                handler.connection.answered()
                handler.write(response, headers: headers, limited: admitted.limited, context: context, head: head)
                handler.resume(context: context)
            case .failed(let answer):
                handler.done(answer, head: head, context: context)
            case .streamed(let rest):
                handler.endStream(rest, context: context, head: head)
            case .cut:
                context.close(promise: nil)
            }
        }
        if admitted.streaming, !callEnded { stream = task }
    }

    // MARK: - Relayed streams

    /// Writes the head of a relayed stream: the upstream's status and headers (less
    /// hop-by-hop and rate limit ones), the decision's rate limit headers, and the
    /// framing.
    private func beginStream(
        _ response: HTTPResponseHead, gateway: Gateway, limited: LimitedDecision, context: ChannelHandlerContext,
        head: HTTPRequestHead
    ) {
        var bytes = Self.statusLine(code: Int(response.status.code), reason: response.status.reasonPhrase, head: head)
        Self.append(gateway.responseHeaders(response.headers), to: &bytes)
        limited.appendHTTP1Headers(to: &bytes)
        streamIsChunked = !(head.version.major == 1 && head.version.minor == 0)
        bytes.append(contentsOf: (streamIsChunked ? "Transfer-Encoding: chunked" : "Connection: close").utf8)
        if streamIsChunked && !head.isKeepAlive { bytes.append(contentsOf: "\r\nConnection: close".utf8) }
        bytes.append(contentsOf: "\r\nDate: ".utf8)
        bytes.append(contentsOf: HTTPDate.now().utf8)
        bytes.append(contentsOf: "\r\n\r\n".utf8)
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(context.channel.allocator.buffer(bytes: bytes))), promise: nil)
    }

    /// Writes events of a relayed stream (one chunk); the future completes once written.
    private func relay(_ events: ByteBuffer, context: ChannelHandlerContext) -> EventLoopFuture<Void> {
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(framed(events, context: context))))
    }

    private func framed(_ events: ByteBuffer, context: ChannelHandlerContext) -> ByteBuffer {
        guard streamIsChunked else { return events }
        var buffer = context.channel.allocator.buffer(capacity: events.readableBytes + 16)
        buffer.writeString(String(events.readableBytes, radix: 16))
        buffer.writeStaticString("\r\n")
        buffer.writeImmutableBuffer(events)
        buffer.writeStaticString("\r\n")
        return buffer
    }

    /// Ends a relayed stream that ended well: `rest` (what followed its last event), the
    /// last chunk; then goes on with what waited, or closes when the connection does.
    private func endStream(_ rest: ByteBuffer, context: ChannelHandlerContext, head: HTTPRequestHead) {
        var end = rest.readableBytes > 0 ? framed(rest, context: context) : context.channel.allocator.buffer(capacity: 5)
        if streamIsChunked { end.writeStaticString("0\r\n\r\n") }
        connection.answered()
        if !streamIsChunked || !head.isKeepAlive {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(.byteBuffer(end))).whenComplete { _ in bound.value.close(promise: nil) }
            return
        }
        context.write(wrapOutboundOut(.byteBuffer(end)), promise: nil)
        needsFlush = true
        resume(context: context)
    }

    /// Runs `body` on `eventLoop`: at once when already there, else as a task of the loop
    /// (a later answer comes from the store's task).
    private static func onLoop(_ eventLoop: any EventLoop, _ body: @escaping @Sendable () -> Void) {
        if eventLoop.inEventLoop { body() } else { eventLoop.execute(body) }
    }

    /// Writes the answer to the request being decided: at once when it is ready (in
    /// memory); else when it comes, on this event loop.
    private func answer(_ pending: Pending<DecisionAnswer>, head: HTTPRequestHead, context: ChannelHandlerContext) {
        switch pending {
        case .ready(let answer):
            connection.answered()
            write(answer, context: context, head: head)
        case .later(let wait):
            wait(replying(context: context, head: head))
        }
    }

    /// Returns what answers a request whose decision comes later (Redis): writes the
    /// answer on this connection's event loop, then goes on with what waited.
    private func replying(context: ChannelHandlerContext, head: HTTPRequestHead) -> @Sendable (DecisionAnswer) -> Void {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        return { answer in
            Self.onLoop(eventLoop) {
                let (handler, context) = loopBound.value
                handler.connection.answered()
                handler.write(answer, context: context, head: head)
                handler.resume(context: context)
            }
        }
    }

    /// Writes a gateway answer of its own and goes on with what waited.
    private func done(_ answer: GatewayAnswer, head: HTTPRequestHead, context: ChannelHandlerContext) {
        connection.answered()
        write(answer, context: context, head: head)
        resume(context: context)
    }

    /// After an answer that was waited for: handles the parts that arrived meanwhile,
    /// or flushes at the end of the event loop's round; when nothing is left open or
    /// pending, the idle timer starts.
    private func resume(context: ChannelHandlerContext) {
        if connection.hasQueued && !replaying {
            replayQueued(context: context)
        } else {
            flushAfterThisTick(context: context)
        }
        if readHeld && !connection.queueIsFull {
            readHeld = false
            context.read()
        }
        if connection.isQuiet && stream == nil { connectionGuard.quiet() }
    }

    /// Flushes once the event loop has handled every event of this round: answers
    /// completed in the same round leave together, so the client's process is woken
    /// once for them rather than once each.
    private func flushAfterThisTick(context: ChannelHandlerContext) {
        guard needsFlush, !flushScheduled else { return }
        flushScheduled = true
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = loopBound.value
            handler.flushScheduled = false
            if handler.needsFlush {
                handler.needsFlush = false
                context.flush()
            }
        }
    }

    /// Reads again the parts that waited while a decision or a gateway call was in
    /// flight, until they are done or another one is in flight (its answer resumes).
    private func replayQueued(context: ChannelHandlerContext) {
        replaying = true
        while let part = connection.nextQueued() {
            read(part, context: context, replayed: true)
        }
        replaying = false
        // As after a read from the socket: flushes the answers, and lets Hummingbird's
        // channel hand on what was forwarded to it.
        channelReadComplete(context: context)
    }

    private func write(_ answer: DecisionAnswer, context: ChannelHandlerContext, head: HTTPRequestHead, close: Bool = false) {
        var bytes = Self.statusLine(code: answer.status.code, reason: answer.status.reasonPhrase, head: head)
        answer.appendHTTP1Headers(to: &bytes)
        bytes.append(contentsOf: "Content-Type: application/json\r\n".utf8)
        write(bytes, body: answer.body, context: context, head: head, close: close)
    }

    /// Writes a gateway answer of its own (an error, a denial).
    private func write(_ answer: GatewayAnswer, context: ChannelHandlerContext, head: HTTPRequestHead, close: Bool = false) {
        var bytes = Self.statusLine(code: answer.status.code, reason: answer.status.reasonPhrase, head: head)
        Self.append(answer.headers, to: &bytes)
        bytes.append(contentsOf: "Content-Type: application/json\r\n".utf8)
        write(bytes, body: Array(answer.body.utf8), context: context, head: head, close: close)
    }

    /// Writes the upstream's answer to a gateway call: its status, `headers` (the
    /// upstream's, less hop-by-hop and rate limit ones), the decision's rate limit
    /// headers, and the body.
    private func write(
        _ response: UpstreamResponse, headers: HTTPFields, limited: LimitedDecision, context: ChannelHandlerContext,
        head: HTTPRequestHead
    ) {
        var bytes = Self.statusLine(code: Int(response.head.status.code), reason: response.head.status.reasonPhrase, head: head)
        Self.append(headers, to: &bytes)
        limited.appendHTTP1Headers(to: &bytes)
        write(bytes, body: response.body.readableBytesView, context: context, head: head)
    }

    private static func statusLine(code: Int, reason: String, head: HTTPRequestHead) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(640)
        bytes.append(contentsOf: head.version.major == 1 && head.version.minor == 0 ? "HTTP/1.0 ".utf8 : "HTTP/1.1 ".utf8)
        JSONWriter.appendDecimal(UInt64(code), to: &bytes)
        bytes.append(UInt8(ascii: " "))
        bytes.append(contentsOf: reason.utf8)
        bytes.append(contentsOf: "\r\n".utf8)
        return bytes
    }

    private static func append(_ fields: HTTPFields, to bytes: inout [UInt8]) {
        for field in fields {
            bytes.append(contentsOf: field.name.rawName.utf8)
            bytes.append(contentsOf: ": ".utf8)
            bytes.append(contentsOf: field.value.utf8)
            bytes.append(contentsOf: "\r\n".utf8)
        }
    }

    /// Ends the head begun in `bytes` (`Content-Length`, `Date`, `Connection`) and
    /// writes it with `body`; closes the connection after it when `close` or when the
    /// request was not keep-alive.
    private func write(
        _ bytes: [UInt8], body: some Collection<UInt8>, context: ChannelHandlerContext, head: HTTPRequestHead,
        close: Bool = false
    ) {
        var bytes = bytes
        let close = close || !head.isKeepAlive
        bytes.append(contentsOf: "Content-Length: ".utf8)
        JSONWriter.appendDecimal(UInt64(body.count), to: &bytes)
        bytes.append(contentsOf: "\r\nDate: ".utf8)
        bytes.append(contentsOf: HTTPDate.now().utf8)
        if close {
            bytes.append(contentsOf: "\r\nConnection: close".utf8)
        } else if head.version.major == 1 && head.version.minor == 0 {
            bytes.append(contentsOf: "\r\nConnection: keep-alive".utf8)
        }
        bytes.append(contentsOf: "\r\n\r\n".utf8)
        var buffer = context.channel.allocator.buffer(capacity: bytes.count + body.count)
        buffer.writeBytes(bytes)
        buffer.writeBytes(body)
        if close {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(.byteBuffer(buffer))).whenComplete { _ in bound.value.close(promise: nil) }
        } else {
            context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: nil)
            needsFlush = true
        }
    }
}

/// Tells `DecisionFastPath` when a response to a forwarded request has been written
/// (before NIO's encoder turns it into bytes), so that it keeps answers in order.
final class ForwardedResponseObserver: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let fastPath: DecisionFastPath

    init(fastPath: DecisionFastPath) {
        self.fastPath = fastPath
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            fastPath.forwardedResponseEnded(context: context)
        }
        context.write(data, promise: promise)
    }
}

/// The `Date` header value (IMF-fixdate), formatted once per second.
enum HTTPDate {
    private static let cache = Mutex<(second: Int, text: String)>((-1, ""))

    static func now() -> String {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &spec)
        let seconds = spec.tv_sec
        if let text = cache.withLock({ $0.second == seconds ? $0.text : nil }) { return text }
        let text = format(seconds)
        cache.withLock { $0 = (seconds, text) }
        return text
    }

    private static func format(_ seconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
