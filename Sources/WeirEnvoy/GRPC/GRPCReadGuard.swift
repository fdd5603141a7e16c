import NIOCore

/// The first handler of a gRPC connection: closes it when an HTTP/2 frame (or the
/// connection preface) stays incomplete for `timeout`: a client that sends a frame a
/// byte at a time, or half a frame and then nothing (slowloris), holds a connection
/// that no idle timer frees soon.
///
/// It follows the frames' boundaries in the bytes as they pass (the 24-byte preface,
/// then each frame's 9-byte header and the payload length it states), without
/// decoding anything else; `NIOHTTP2Handler` after it does the decoding. The clock
/// starts when a read leaves a frame incomplete and stops when one leaves none. One
/// timer per connection at most, moved on lazily.
///
/// Not thread-safe, like every channel handler: one per connection, on its event loop.
final class GRPCReadGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let timeout: TimeAmount
    /// Bytes of the connection preface still to come.
    private var prefaceLeft = 24
    /// Bytes of the current frame's header read so far (0 to 8), and its length field.
    private var headerRead = 0
    private var length = 0
    /// Bytes of the current frame's payload still to come.
    private var payloadLeft = 0
    /// Since when a frame has been incomplete; nil when none is.
    private var incompleteSince: NIODeadline?
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        follow(unwrapInboundIn(data))
        let incomplete = prefaceLeft > 0 || headerRead > 0 || payloadLeft > 0
        if !incomplete {
            incompleteSince = nil
        } else if incompleteSince == nil {
            let now = context.eventLoop.now
            incompleteSince = now
            if timer == nil { arm(at: now + timeout, context: context) }
        }
        context.fireChannelRead(data)
    }

    /// Moves the frame boundaries on over `bytes`.
    private func follow(_ bytes: ByteBuffer) {
        bytes.withUnsafeReadableBytes { raw in
            var index = 0
            while index < raw.count {
                let left = raw.count - index
                if prefaceLeft > 0 {
                    let step = min(prefaceLeft, left)
                    prefaceLeft -= step
                    index += step
                } else if payloadLeft > 0 {
                    let step = min(payloadLeft, left)
                    payloadLeft -= step
                    index += step
                } else {
                    // A frame header: the first three bytes are the payload's length.
                    if headerRead < 3 { length = length << 8 | Int(raw[index]) }
                    headerRead += 1
                    index += 1
                    if headerRead == 9 {
                        payloadLeft = length
                        headerRead = 0
                        length = 0
                    }
                }
            }
        }
    }

    private func arm(at deadline: NIODeadline, context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) { loopBound.value.check() }
    }

    private func check() {
        timer = nil
        guard let context, let since = incompleteSince else { return }
        let due = since + timeout
        if context.eventLoop.now >= due {
            context.close(promise: nil)
        } else {
            arm(at: due, context: context)
        }
    }
}
