import NIOCore
import WeirCore

/// A batch of commands written together; `promise` receives their replies, in order.
struct RESPRequest: Sendable {
    var commands: [[String]]
    var promise: EventLoopPromise<[RESPValue]>
    /// How long the batch may wait for its replies before failing with a transient error.
    var timeout: TimeAmount
}

/// Pipelining over one connection: requests are written as they come, flushed once per
/// event-loop tick (so concurrent callers' commands share a system call), and their
/// replies matched first in, first out (Redis answers in order on a connection).
///
/// A request that times out fails at once; its replies, when they arrive, are
/// read and dropped so that the following replies stay matched. When the
/// connection closes, every waiting request fails with a transient `StoreError`.
///
/// Runs on its channel's event loop only.
final class RESPChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RESPRequest
    typealias OutboundOut = ByteBuffer

    /// A request waiting for its replies.
    final class Pending {
        let expected: Int
        var replies: [RESPValue] = []
        let promise: EventLoopPromise<[RESPValue]>
        /// Completed (answered, timed out or failed); later replies are dropped.
        var isDone = false
        var timeout: Scheduled<Void>?

        init(expected: Int, promise: EventLoopPromise<[RESPValue]>) {
            self.expected = expected
            self.promise = promise
        }

        func finish(_ result: Result<[RESPValue], any Error>) {
            guard !isDone else { return }
            isDone = true
            timeout?.cancel()
            promise.completeWith(result)
        }
    }

    private var queue = CircularBuffer<Pending>()
    private var received: ByteBuffer?
    /// Whether a flush is already due at the end of this event-loop tick: requests written
    /// in one tick (from many concurrent callers) leave in one system call.
    private var flushScheduled = false
    private let endpoint: String

    init(endpoint: String) {
        self.endpoint = endpoint
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        guard !request.commands.isEmpty else {
            request.promise.succeed([])
            promise?.succeed(())
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 128)
        for command in request.commands { RESPCoding.encode(command, into: &buffer) }
        let pending = Pending(expected: request.commands.count, promise: request.promise)
        queue.append(pending)
        let bound = NIOLoopBound(pending, eventLoop: context.eventLoop)
        let endpoint = self.endpoint
        pending.timeout = context.eventLoop.scheduleTask(in: request.timeout) {
            bound.value.finish(.failure(StoreError(
                "redis \(endpoint): no reply within \(request.timeout.nanoseconds / 1_000_000) ms", isTransient: true)))
        }
        let written = context.eventLoop.makePromise(of: Void.self)
        let channel = NIOLoopBound(context.channel, eventLoop: context.eventLoop)
        written.futureResult.whenFailure { error in
            // Unsent bytes would misalign replies: the connection is finished.
            bound.value.finish(.failure(StoreError("redis \(endpoint): write failed: \(error)", isTransient: true)))
            channel.value.close(promise: nil)
        }
        if let promise { written.futureResult.cascade(to: promise) }
        context.write(wrapOutboundOut(buffer), promise: written)
        scheduleFlush(context: context)
    }

    /// Flushes once the event loop has run the tasks already queued, which include the
    /// writes other callers made meanwhile.
    private func scheduleFlush(context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = bound.value
            handler.flushScheduled = false
            context.flush()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if received == nil {
            received = incoming
        } else {
            received!.writeBuffer(&incoming)
        }
        do {
            while var buffer = received, let value = try RESPCoding.decode(from: &buffer) {
                received = buffer
                try deliver(value)
            }
            if let buffer = received, buffer.readableBytes == 0 {
                received = nil
            } else if received != nil, received!.readerIndex > 64 * 1024 {
                received!.discardReadBytes()
            }
        } catch {
            fail(with: StoreError("redis \(endpoint): \(error)", isTransient: true))
            context.close(promise: nil)
        }
    }

    private func deliver(_ value: RESPValue) throws {
        guard let pending = queue.first else {
            throw RESPCoding.ProtocolError(description: "a reply nobody asked for")
        }
        pending.replies.append(value)
        if pending.replies.count == pending.expected {
            queue.removeFirst()
            pending.finish(.success(pending.replies))
        }
    }

    private func fail(with error: StoreError) {
        while let pending = queue.popFirst() {
            pending.finish(.failure(error))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(with: StoreError("redis \(endpoint): connection closed", isTransient: true))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(with: StoreError("redis \(endpoint): \(error)", isTransient: true))
        context.close(promise: nil)
    }
}
