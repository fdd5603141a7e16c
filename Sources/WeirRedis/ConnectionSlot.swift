import NIOCore

/// One connection of the pool as a state machine: each event is a mutating method,
/// and `next(now:)` says what the caller does after leaving the lock.
struct ConnectionSlot: Sendable {
    enum State: Sendable {
        case idle
        case connecting(EventLoopFuture<any Channel>)
        case connected(any Channel)
        /// The last attempt failed: no new attempt before `until`.
        case backingOff(until: NIODeadline)
    }

    enum Action {
        case use(any Channel)
        case wait(EventLoopFuture<any Channel>)
        /// Open a connection, then report it with `connecting(_:)`.
        case connect
        case failFast(remaining: TimeAmount)
    }

    private(set) var state: State = .idle
    private let initialBackoff: TimeAmount
    private var backoff: TimeAmount

    init(initialBackoff: TimeAmount) {
        self.initialBackoff = initialBackoff
        self.backoff = initialBackoff
    }

    mutating func next(now: NIODeadline) -> Action {
        switch state {
        case .connected(let channel) where channel.isActive:
            return .use(channel)
        case .connecting(let future):
            return .wait(future)
        case .backingOff(let until) where now < until:
            return .failFast(remaining: until - now)
        case .idle, .connected, .backingOff:
            // Claim the attempt now, so that concurrent callers wait for it rather than open more.
            state = .idle
            return .connect
        }
    }

    mutating func connecting(_ future: EventLoopFuture<any Channel>) {
        if case .idle = state { state = .connecting(future) }
    }

    mutating func connected(_ channel: any Channel) {
        state = .connected(channel)
        backoff = initialBackoff
    }

    mutating func failed(now: NIODeadline, maximumBackoff: TimeAmount) {
        state = .backingOff(until: now + backoff)
        backoff = min(maximumBackoff, backoff + backoff)
    }

    mutating func takeChannel() -> (any Channel)? {
        defer { state = .idle }
        if case .connected(let channel) = state { return channel }
        return nil
    }
}
