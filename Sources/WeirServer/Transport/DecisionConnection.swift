import NIOCore
import NIOHTTP1

/// The request side of one HTTP/1 connection of `weir serve`, as an explicit state
/// machine: which requests are decided on the event loop (`DecisionFastPath`) and which
/// go on to Hummingbird, in what order, and what waits. Each event is a `mutating func`
/// returning the `Action` its caller performs; the machine touches no channel, so it is
/// tested without sockets (`DecisionConnectionTests`).
///
/// **Rules.**
/// - A request the fast path serves (`route` is non-nil) is collected whole, then
///   decided (`Action.decide`); the connection then waits until `answered()`, and parts
///   that arrive meanwhile (HTTP pipelining) are queued, to be read again in order.
/// - Every other request is forwarded to Hummingbird part by part. While a forwarded
///   request's response has not ended, fast-path requests are forwarded too, so answers
///   always leave in request order.
/// - A body over `maxBodySize` (declared or found while reading) is refused with 413 and
///   the connection closes (the rest of the body cannot be told from a next request
///   without reading it); everything after it is dropped. A route that
///   `forwardsOversized` instead goes to Hummingbird, which words the refusal itself.
///
/// Not thread-safe: one per connection, used on its event loop only.
struct DecisionConnection<Route> {
    enum State {
        /// Between requests.
        case idle
        /// Reading the body of a fast-path request.
        case collecting(Route, ByteBuffer, HTTPRequestHead)
        /// After a 413: the connection is closing; whatever arrives is dropped.
        case closing
        /// Passing a request on to Hummingbird, up to its end.
        case forwarding
        /// A fast-path request is being decided (or sent upstream); parts wait in `queued`.
        case waiting
    }

    enum Action {
        case none
        /// Pass this part on to Hummingbird.
        case forward(HTTPServerRequestPart)
        /// Hand Hummingbird a request begun on the fast path: its head, the body read so
        /// far, then `part` (the chunk that arrived, or the request's end) if any.
        case forwardBegun(HTTPRequestHead, body: ByteBuffer?, then: HTTPServerRequestPart?)
        /// Answer 413 to `head` and close the connection.
        case refuseTooLarge(HTTPRequestHead)
        /// The request is whole: decide it, then call `answered()`.
        case decide(Route, HTTPRequestHead, body: ByteBuffer)
    }

    private(set) var state = State.idle
    /// Parts that arrived while waiting, oldest first.
    private var queued: CircularBuffer<HTTPServerRequestPart> = []
    /// Requests forwarded to Hummingbird whose response has not ended yet.
    private(set) var forwarded = 0
    let maxBodySize: Int
    private let allocator: ByteBufferAllocator
    private let forwardsOversized: (Route) -> Bool

    init(maxBodySize: Int, allocator: ByteBufferAllocator, forwardsOversized: @escaping (Route) -> Bool) {
        self.maxBodySize = maxBodySize
        self.allocator = allocator
        self.forwardsOversized = forwardsOversized
    }

    /// Whether a decision is in flight (parts are being queued).
    var isWaiting: Bool {
        if case .waiting = state { return true }
        return false
    }

    /// A part read from the connection. `route` tells a head's fast-path route (nil: not
    /// served by the fast path); it is called for heads only.
    mutating func read(_ part: HTTPServerRequestPart, route: (HTTPRequestHead) -> Route?) -> Action {
        switch (state, part) {
        case (.waiting, _):
            queued.append(part)
            return .none
        case (.closing, _):
            return .none
        case (.idle, .head(let head)):
            guard forwarded == 0, head.method == .POST, let route = route(head) else {
                forwarded += 1
                state = .forwarding
                return .forward(part)
            }
            let length = head.headers.first(name: "content-length").flatMap { Int($0) }
            if let length, length > maxBodySize {
                return oversized(route, head: head, body: nil, then: nil)
            }
            state = .collecting(route, allocator.buffer(capacity: min(max(length ?? 512, 0), maxBodySize)), head)
            return .none
        case (.collecting(let route, var body, let head), .body(var chunk)):
            if body.readableBytes + chunk.readableBytes > maxBodySize {
                return oversized(route, head: head, body: body, then: part)
            }
            state = .idle  // drop the enum's reference, so appending does not copy
            body.writeBuffer(&chunk)
            state = .collecting(route, body, head)
            return .none
        case (.collecting(let route, let body, let head), .end):
            state = .waiting
            return .decide(route, head, body: body)
        case (.forwarding, .body):
            return .forward(part)
        case (.forwarding, .end):
            state = .idle
            return .forward(part)
        case (.idle, .body), (.idle, .end):
            preconditionFailure("a body part or end arrived outside a request")
        case (.collecting, .head), (.forwarding, .head):
            preconditionFailure("a request head arrived before the previous request ended")
        }
    }

    private mutating func oversized(
        _ route: Route, head: HTTPRequestHead, body: ByteBuffer?, then part: HTTPServerRequestPart?
    ) -> Action {
        if forwardsOversized(route) {
            forwarded += 1
            state = .forwarding
            return .forwardBegun(head, body: body, then: part)
        }
        state = .closing
        return .refuseTooLarge(head)
    }

    /// The request being decided turns out to be Hummingbird's after all (a gateway
    /// call asking for a stream): hand it over whole.
    mutating func handOver(_ head: HTTPRequestHead, body: ByteBuffer) -> Action {
        guard case .waiting = state else { preconditionFailure("handOver while not deciding a request") }
        forwarded += 1
        state = .idle
        return .forwardBegun(head, body: body, then: .end(nil))
    }

    /// The decision has been answered (its response written): reading goes on.
    mutating func answered() {
        guard case .waiting = state else { preconditionFailure("an answer while no request was being decided") }
        state = .idle
    }

    /// The next part that waited, to be read again with `read`; nil when none waits or
    /// another decision is in flight.
    mutating func nextQueued() -> HTTPServerRequestPart? {
        if case .waiting = state { return nil }
        return queued.popFirst()
    }

    /// Whether parts wait to be read again.
    var hasQueued: Bool { !queued.isEmpty }

    /// Hummingbird has written the end of a response to a forwarded request. (An answer
    /// Hummingbird writes of its own accord, to a request it never got from here, is not
    /// counted: the count never goes below zero.)
    mutating func forwardedResponseEnded() {
        if forwarded > 0 { forwarded -= 1 }
    }
}
