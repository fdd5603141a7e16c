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
/// - Every other request is forwarded to Hummingbird part by part. A fast-path request
///   that arrives while a forwarded request's response has not ended waits for it (it is
///   held, and what follows is queued), so answers always leave in request order; the
///   fast path's requests are never Hummingbird's.
/// - A body over `maxBodySize` (declared or found while reading) is refused with 413 and
///   the connection closes (the rest of the body cannot be told from a next request
///   without reading it); everything after it is dropped.
/// - A head with more fields or field bytes than `limits` allows is refused with 431,
///   whatever its route, and the connection closes.
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
        /// A fast-path request waits, in `queued` with what follows, for the responses to
        /// the requests forwarded before it.
        case held
    }

    enum Action {
        case none
        /// Pass this part on to Hummingbird.
        case forward(HTTPServerRequestPart)
        /// Answer 413 to `head` (a request of `Route`) and close the connection.
        case refuseTooLarge(Route, HTTPRequestHead)
        /// Answer 431 to `head` (its header fields are over the limits) and close.
        case refuseHeaders(HTTPRequestHead)
        /// The request is whole: decide it, then call `answered()`.
        case decide(Route, HTTPRequestHead, body: ByteBuffer)
    }

    private(set) var state = State.idle
    /// Parts that arrived while waiting, oldest first.
    private var queued: CircularBuffer<HTTPServerRequestPart> = []
    /// About how much memory the queued parts hold, in bytes (bodies whole, a head as its
    /// target and fields, plus a fixed overhead per part).
    private(set) var queuedBytes = 0

    /// Whether the queue holds `limits.maxQueuedBytes` or more: the connection should stop
    /// reading from the socket until it is read again (a client pipelining without end
    /// behind a call in flight holds a bounded amount of memory).
    var queueIsFull: Bool { queuedBytes >= limits.maxQueuedBytes }

    private mutating func queue(_ part: HTTPServerRequestPart, first: Bool = false) {
        if first { queued.prepend(part) } else { queued.append(part) }
        queuedBytes += Self.size(of: part)
    }

    private static func size(of part: HTTPServerRequestPart) -> Int {
        switch part {
        case .head(let head): 64 + head.uri.utf8.count + head.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 16 }
        case .body(let body): 64 + body.readableBytes
        case .end: 64
        }
    }
    /// Requests forwarded to Hummingbird whose response has not ended yet.
    private(set) var forwarded = 0
    let maxBodySize: Int
    let limits: ConnectionLimits
    private let allocator: ByteBufferAllocator

    init(maxBodySize: Int, limits: ConnectionLimits = ConnectionLimits(), allocator: ByteBufferAllocator) {
        self.maxBodySize = maxBodySize
        self.limits = limits
        self.allocator = allocator
    }

    /// Whether the answer to an earlier request than the one being read is pending (a
    /// decision in flight, a request held, a forwarded response not ended).
    var isAnsweringEarlier: Bool {
        switch state {
        case .waiting, .held: return true
        case .forwarding: return forwarded > 1
        default: return forwarded > 0
        }
    }

    /// Whether nothing is open or pending: no request being read, decided, held or
    /// forwarded, nothing queued (the connection may be closed as idle).
    var isQuiet: Bool {
        guard case .idle = state else { return false }
        return forwarded == 0 && queued.isEmpty
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
        case (.waiting, _), (.held, _):
            queue(part)
            return .none
        case (.closing, _):
            return .none
        case (.idle, .head(let head)):
            guard limits.admits(head.headers) else {
                state = .closing
                return .refuseHeaders(head)
            }
            guard head.method == .POST, let route = route(head) else {
                forwarded += 1
                state = .forwarding
                return .forward(part)
            }
            guard forwarded == 0 else {
                // First in the queue: it may come from it (read again), ahead of its body.
                state = .held
                queue(part, first: true)
                return .none
            }
            let length = head.headers.first(name: "content-length").flatMap { Int($0) }
            if let length, length > maxBodySize {
                state = .closing
                return .refuseTooLarge(route, head)
            }
            state = .collecting(route, allocator.buffer(capacity: min(max(length ?? 512, 0), maxBodySize)), head)
            return .none
        case (.collecting(let route, var body, let head), .body(var chunk)):
            if body.readableBytes + chunk.readableBytes > maxBodySize {
                state = .closing
                return .refuseTooLarge(route, head)
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

    /// The decision has been answered (its response written): reading goes on.
    mutating func answered() {
        guard case .waiting = state else { preconditionFailure("an answer while no request was being decided") }
        state = .idle
    }

    /// The next part that waited, to be read again with `read`; nil when none waits, or
    /// another decision is in flight, or a request is held.
    mutating func nextQueued() -> HTTPServerRequestPart? {
        switch state {
        case .waiting, .held: return nil
        default:
            guard let part = queued.popFirst() else { return nil }
            queuedBytes -= Self.size(of: part)
            return part
        }
    }

    /// Whether parts wait to be read again.
    var hasQueued: Bool { !queued.isEmpty }

    /// Hummingbird has written the end of a response to a forwarded request. (An answer
    /// Hummingbird writes of its own accord, to a request it never got from here, is not
    /// counted: the count never goes below zero.) Returns whether a held request may go
    /// on now: the queued parts are then to be read again.
    mutating func forwardedResponseEnded() -> Bool {
        if forwarded > 0 { forwarded -= 1 }
        guard forwarded == 0, case .held = state else { return false }
        state = .idle
        return true
    }
}
