import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import WeirCore

/// The connections to one Redis server (one node of a cluster, or the only server):
/// a fixed pool, each connection shared by every caller (commands from concurrent
/// tasks are pipelined on it), with reconnection and exponential backoff.
///
/// **Failures.** Every transport problem (refused, closed, timed out, backing off)
/// throws `StoreError` with `isTransient: true`, quickly: a caller never waits longer
/// than the connect or command timeout, and while a connection backs off, calls on it
/// fail at once. Error replies are returned as `RESPValue.error`, not thrown.
///
/// Concurrency: thread-safe; `send` suspends until the replies arrive.
final class RedisNode: Sendable {
    let host: String
    let port: Int
    private let configuration: RedisClient.Configuration
    private let security: Security
    private let group: any EventLoopGroup
    private let slots: [SlotBox]
    private let nextSlot = Atomic<Int>(0)

    /// `host:port`, as Redis names nodes in `MOVED` and `ASK` redirections.
    var endpoint: String { Self.endpoint(host: host, port: port) }

    static func endpoint(host: String, port: Int) -> String { "\(host):\(port)" }

    /// TLS for a client's connections: none, a context shared by every node, or the
    /// reason the configuration gave none (each connection attempt then fails with it).
    enum Security: Sendable {
        case plain
        case tls(NIOSSLContext)
        case invalid(String)

        init(_ configuration: TLSConfiguration?) {
            guard let configuration else {
                self = .plain
                return
            }
            do {
                self = .tls(try NIOSSLContext(configuration: configuration))
            } catch {
                self = .invalid("\(error)")
            }
        }
    }

    init(host: String, port: Int, configuration: RedisClient.Configuration, security: Security, group: any EventLoopGroup) {
        self.host = host
        self.port = port
        self.configuration = configuration
        self.security = security
        self.group = group
        self.slots = (0..<configuration.connectionCount).map { _ in
            SlotBox(ConnectionSlot(initialBackoff: configuration.initialBackoff))
        }
    }

    /// Sends `commands` in one write on one connection and returns their replies, in order.
    /// The handler flushes at the end of the event loop's tick, with other callers' writes.
    func send(_ commands: [[String]]) async throws -> [RESPValue] {
        let channel = try await connection()
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        // A channel that closed after `connection()` saw it active has no handler left to
        // answer the request: the write fails, and so does the request (a request the
        // handler already answered keeps its answer: a promise completes once).
        let written = channel.eventLoop.makePromise(of: Void.self)
        let endpoint = self.endpoint
        written.futureResult.whenFailure { error in
            promise.fail(StoreError("redis \(endpoint): write failed: \(error)", isTransient: true))
        }
        channel.write(
            RESPRequest(commands: commands, promise: promise, timeout: configuration.commandTimeout), promise: written)
        return try await promise.futureResult.get()
    }

    /// Closes every connection. Calls made afterwards reconnect.
    func close() async {
        for slot in slots {
            let channel = slot.state.withLock { $0.takeChannel() }
            try? await channel?.close()
        }
    }

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
        let timeout = configuration.commandTimeout
        var context: NIOSSLContext?
        switch security {
        case .plain: break
        case .tls(let shared): context = shared
        case .invalid(let reason):
            return group.next().makeFailedFuture(
                StoreError("redis \(endpoint): TLS configuration refused: \(reason)", isTransient: false))
        }
        // SNI takes names only; an address is checked against the certificate's IP addresses.
        let serverHostname = (try? SocketAddress(ipAddress: host, port: 0)) == nil ? host : nil
        // Sent on every new connection, in one write: AUTH, then SELECT.
        var setup: [[String]] = []
        if let password = configuration.password {
            setup.append(["AUTH"] + (configuration.username.map { [$0] } ?? []) + [password])
        }
        if configuration.database != 0 { setup.append(["SELECT", String(configuration.database)]) }
        let (tlsContext, setupCommands) = (context, setup)
        return ClientBootstrap(group: group)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tlsContext, serverHostname: serverHostname))
                    }
                    try channel.pipeline.syncOperations.addHandler(RESPChannelHandler(endpoint: endpoint))
                }
            }
            .connect(host: host, port: port)
            .flatMapErrorThrowing { error -> any Channel in
                throw StoreError("redis \(endpoint): cannot connect: \(error)", isTransient: true)
            }
            .flatMap { (channel: any Channel) -> EventLoopFuture<any Channel> in
                guard !setupCommands.isEmpty else { return channel.eventLoop.makeSucceededFuture(channel) }
                let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
                // As in `send`: a write that never reaches the handler fails the setup.
                let written = channel.eventLoop.makePromise(of: Void.self)
                written.futureResult.whenFailure { error in
                    promise.fail(StoreError("redis \(endpoint): write failed: \(error)", isTransient: true))
                }
                channel.writeAndFlush(RESPRequest(commands: setupCommands, promise: promise, timeout: timeout), promise: written)
                return promise.futureResult.flatMapThrowing { replies in
                    for reply in replies { _ = try RedisClient.checked(reply) }
                    return channel
                }.flatMapError { error in
                    // A connection that failed its setup (wrong password, TLS handshake) is not used.
                    channel.close(promise: nil)
                    return channel.eventLoop.makeFailedFuture(error)
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
