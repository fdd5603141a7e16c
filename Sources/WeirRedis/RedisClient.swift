import NIOCore
import NIOPosix
import Synchronization
import WeirCore

/// A small Redis client: a fixed pool of connections, each shared by every caller
/// (commands from concurrent tasks are pipelined on it), per-command timeouts,
/// and reconnection with exponential backoff.
///
/// **Failures.** Every transport problem (refused, closed, timed out, backing off)
/// throws `StoreError` with `isTransient: true`, quickly: a caller never waits longer
/// than the connect or command timeout, and while a connection backs off, calls on it
/// fail at once. Error replies from Redis are returned as `RESPValue.error`, not thrown,
/// except by `command(_:)`.
///
/// **Reconnection.** A connection found closed is reopened by the next call that picks
/// it; a failed attempt backs off (`initialBackoff`, doubling to `maximumBackoff`)
/// before the next one. No background task: nothing runs while nobody calls.
///
/// Concurrency: thread-safe; methods suspend until the replies arrive.
public final class RedisClient: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Connections in the pool; commands are spread over them round-robin.
        public var connectionCount: Int
        /// How long one command (or pipelined batch) may wait for its replies.
        public var commandTimeout: TimeAmount
        /// How long opening a connection may take.
        public var connectTimeout: TimeAmount
        /// Wait after the first failed connection attempt; doubles after each failure.
        public var initialBackoff: TimeAmount
        public var maximumBackoff: TimeAmount
        /// The database (`SELECT`), 0 by default.
        public var database: Int

        public init(
            host: String = "127.0.0.1", port: Int = 6379, connectionCount: Int = 2,
            commandTimeout: TimeAmount = .milliseconds(50), connectTimeout: TimeAmount = .milliseconds(250),
            initialBackoff: TimeAmount = .milliseconds(20), maximumBackoff: TimeAmount = .seconds(1),
            database: Int = 0
        ) {
            self.host = host
            self.port = port
            self.connectionCount = max(1, connectionCount)
            self.commandTimeout = commandTimeout
            self.connectTimeout = connectTimeout
            self.initialBackoff = initialBackoff
            self.maximumBackoff = maximumBackoff
            self.database = database
        }
    }

    public let configuration: Configuration
    private let group: any EventLoopGroup
    private let slots: [SlotBox]
    private let nextSlot = Atomic<Int>(0)

    /// - Parameter group: the event loops connections run on; `MultiThreadedEventLoopGroup.singleton` by default.
    public init(configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.configuration = configuration
        self.group = group
        self.slots = (0..<configuration.connectionCount).map { _ in
            SlotBox(ConnectionSlot(initialBackoff: configuration.initialBackoff))
        }
    }

    /// Closes every connection. Calls made afterwards reconnect.
    public func close() async {
        for slot in slots {
            let channel = slot.state.withLock { $0.takeChannel() }
            try? await channel?.close()
        }
    }

    /// Sends `commands` in one write on one connection and returns their replies, in order.
    /// Error replies are returned, not thrown.
    ///
    /// - Throws: `StoreError` (transient) when no connection is available or the replies do
    ///   not come within the command timeout.
    public func pipeline(_ commands: [[String]]) async throws -> [RESPValue] {
        let channel = try await connection()
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        channel.writeAndFlush(
            RESPRequest(commands: commands, promise: promise, timeout: configuration.commandTimeout), promise: nil)
        return try await promise.futureResult.get()
    }

    /// Sends one command and returns its reply; an error reply throws a `StoreError`
    /// (transient for `LOADING`, `BUSY`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`).
    @discardableResult
    public func command(_ arguments: String...) async throws -> RESPValue {
        try Self.checked(try await pipeline([arguments])[0])
    }

    /// `value`, or a `StoreError` when it is an error reply.
    public static func checked(_ value: RESPValue) throws -> RESPValue {
        guard let message = value.errorMessage else { return value }
        let code = message.prefix { $0 != " " }
        let transient = ["LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN"].contains(String(code))
        throw StoreError("redis: \(message)", isTransient: transient)
    }

    private var endpoint: String { "\(configuration.host):\(configuration.port)" }

    /// A connected channel from the pool, connecting or failing fast as the slot's state says.
    private func connection() async throws -> any Channel {
        let index = nextSlot.wrappingAdd(1, ordering: .relaxed).oldValue % slots.count
        let now = NIODeadline.now()
        // The attempt is opened under the lock (opening only schedules work on an event
        // loop), so that concurrent callers wait for it rather than open more.
        let (action, opened) = slots[index].state.withLock { slot -> (ConnectionSlot.Action, Bool) in
            let action = slot.next(now: now)
            guard case .connect = action else { return (action, false) }
            let future = open()
            slot.connecting(future)
            return (.wait(future), true)
        }
        switch action {
        case .use(let channel):
            return channel
        case .wait(let future):
            if opened {
                future.whenComplete { [configuration] result in
                    self.slots[index].state.withLock { slot in
                        switch result {
                        case .success(let channel): slot.connected(channel)
                        case .failure: slot.failed(now: .now(), maximumBackoff: configuration.maximumBackoff)
                        }
                    }
                }
            }
            return try await future.get()
        case .failFast(let remaining):
            throw StoreError(
                "redis \(endpoint): unreachable, next attempt in \(max(0, remaining.nanoseconds / 1_000_000)) ms",
                isTransient: true)
        case .connect:
            preconditionFailure("a connect action is turned into a wait under the lock")
        }
    }

    private func open() -> EventLoopFuture<any Channel> {
        let endpoint = self.endpoint
        let database = configuration.database
        let timeout = configuration.commandTimeout
        return ClientBootstrap(group: group)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RESPChannelHandler(endpoint: endpoint))
                }
            }
            .connect(host: configuration.host, port: configuration.port)
            .flatMapErrorThrowing { error -> any Channel in
                throw StoreError("redis \(endpoint): cannot connect: \(error)", isTransient: true)
            }
            .flatMap { (channel: any Channel) -> EventLoopFuture<any Channel> in
                guard database != 0 else { return channel.eventLoop.makeSucceededFuture(channel) }
                let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
                channel.writeAndFlush(
                    RESPRequest(commands: [["SELECT", String(database)]], promise: promise, timeout: timeout), promise: nil)
                return promise.futureResult.flatMapThrowing { replies in
                    _ = try RedisClient.checked(replies[0])
                    return channel
                }
            }
    }
}

/// A slot's lock, in a class so that the pool can keep slots in an array.
final class SlotBox: Sendable {
    let state: Mutex<ConnectionSlot>

    init(_ slot: ConnectionSlot) {
        self.state = Mutex(slot)
    }
}

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
