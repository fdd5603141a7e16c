import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import WeirCore

/// A small Redis client for one server or a Redis Cluster: per server a fixed pool of
/// connections, each shared by every caller (commands from concurrent tasks are
/// pipelined on it), per-command timeouts, and reconnection with exponential backoff.
///
/// **Failures.** Every transport problem (refused, closed, timed out, backing off)
/// throws `StoreError` with `isTransient: true`, quickly: a caller never waits longer
/// than the connect or command timeout (per node asked), and while a connection backs
/// off, calls on it fail at once. Error replies from Redis are returned as
/// `RESPValue.error`, not thrown, except by `command(_:)`.
///
/// **Reconnection.** A connection found closed is reopened by the next call that picks
/// it; a failed attempt backs off (`initialBackoff`, doubling to `maximumBackoff`)
/// before the next one. No background task: nothing runs while nobody calls.
///
/// **Connections** are plain TCP or TLS (`Configuration.tls`, `rediss://`), and each new
/// one sends `AUTH` (when a password is set) and `SELECT` (database other than 0) before
/// any command; a wrong password is a permanent `StoreError`. `Configuration(url:)` reads
/// `redis://[[user]:password@]host[:port][/db]` and `rediss://`.
///
/// **Redis Cluster**, transparently. The configured server is the seed. The client
/// starts out sending everything to it; the first `MOVED` reply shows a cluster, and the
/// client then reads the slot map (`CLUSTER SLOTS`) and from then on routes each command
/// to the master serving the hash slot of its keys (CRC16 of the key or its `{hash
/// tag}`), with a connection pool per node. A pipeline whose commands belong to several
/// nodes is split into one batch per node, sent concurrently: the commands for one node
/// keep their order, commands for different nodes have none between them. `MOVED` patches
/// the map, refreshes it and retries on the named node; `ASK` retries once on the named
/// node after `ASKING`; at most `maximumRedirects` hops per command. Commands without keys
/// (`PING`) go to the seed; `onEveryMaster` sends one to every master. A command whose keys span slots is refused
/// (permanent `StoreError`). When a node cannot be reached (a master that died and was
/// replaced by a replica), the call fails transiently and the client reads the map again
/// from the first node that answers (at most every 100 ms), so later calls go to the new
/// master. A standalone server never answers `MOVED`, so it pays nothing.
///
/// Concurrency: thread-safe; methods suspend until the replies arrive.
public final class RedisClient: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Connections in the pool of each server; commands are spread over them round-robin.
        public var connectionCount: Int
        /// How long one command (or pipelined batch) may wait for its replies.
        public var commandTimeout: TimeAmount
        /// How long opening a connection may take.
        public var connectTimeout: TimeAmount
        /// Wait after the first failed connection attempt; doubles after each failure.
        public var initialBackoff: TimeAmount
        public var maximumBackoff: TimeAmount
        /// The database (`SELECT`), 0 by default (a cluster only has database 0).
        public var database: Int
        /// The most `MOVED`/`ASK` redirections one command follows before failing (transiently).
        public var maximumRedirects: Int
        /// TLS for every connection (`rediss://`), or nil for plain TCP. The server's name
        /// is checked against its certificate (SNI and hostname when `host` is a name; the
        /// certificate's IP addresses when it is an address).
        public var tls: TLSConfiguration?
        /// Sent with `AUTH` on every new connection, before `SELECT`; nil for none.
        public var password: String?
        /// The ACL user for `AUTH` (Redis 6+); nil for the default user.
        public var username: String?

        public init(
            host: String = "127.0.0.1", port: Int = 6379, connectionCount: Int = 2,
            commandTimeout: TimeAmount = .milliseconds(50), connectTimeout: TimeAmount = .milliseconds(250),
            initialBackoff: TimeAmount = .milliseconds(20), maximumBackoff: TimeAmount = .seconds(1),
            database: Int = 0, maximumRedirects: Int = 5, tls: TLSConfiguration? = nil,
            password: String? = nil, username: String? = nil
        ) {
            self.host = host
            self.port = port
            self.connectionCount = max(1, connectionCount)
            self.commandTimeout = commandTimeout
            self.connectTimeout = connectTimeout
            self.initialBackoff = initialBackoff
            self.maximumBackoff = maximumBackoff
            self.database = database
            self.maximumRedirects = max(1, maximumRedirects)
            self.tls = tls
            self.password = password
            self.username = username
        }
    }

    /// What the client knows of the servers: the slot map once a `MOVED` showed a
    /// cluster, and a pool for every node it has talked to.
    struct Topology: Sendable {
        var map: ClusterMap?
        var nodes: [String: RedisNode]
        var refreshing = false
        /// No map refresh after a failure before this (one per `refreshInterval`).
        var nextFailureRefresh = NIODeadline.distantPast
    }

    /// The least time between two map refreshes caused by failing nodes.
    static let refreshInterval = TimeAmount.milliseconds(100)

    public let configuration: Configuration
    private let group: any EventLoopGroup
    /// The TLS context every connection shares, or why it could not be made.
    private let security: RedisNode.Security
    private let seed: RedisNode
    private let topology: Mutex<Topology>

    /// - Parameter group: the event loops connections run on; `MultiThreadedEventLoopGroup.singleton` by default.
    public init(configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.configuration = configuration
        self.group = group
        let security = RedisNode.Security(configuration.tls)
        self.security = security
        let seed = RedisNode(
            host: configuration.host, port: configuration.port, configuration: configuration, security: security, group: group)
        self.seed = seed
        self.topology = Mutex(Topology(map: nil, nodes: [seed.endpoint: seed]))
    }

    /// Whether the client has found a Redis Cluster (after its first `MOVED`) and routes by slot.
    public var isClusterMode: Bool {
        topology.withLock { $0.map != nil }
    }

    /// The endpoint (`host:port`) the client would send a command on `key` to now.
    public func endpoint(forKey key: String) -> String {
        topology.withLock { $0.map?.node(for: HashSlot.slot(of: key)) } ?? seed.endpoint
    }

    /// Closes every connection to every node. Calls made afterwards reconnect.
    public func close() async {
        let nodes = topology.withLock { Array($0.nodes.values) }
        for node in nodes { await node.close() }
    }

    /// Sends `commands` and returns their replies, in order: in one write on one
    /// connection to a standalone server; in a cluster, one write per node concerned.
    /// Error replies are returned, not thrown (redirections are followed first).
    ///
    /// - Throws: `StoreError` (transient) when no connection is available, the replies do
    ///   not come within the command timeout or redirections do not end; (permanent) when
    ///   one command's keys span cluster slots.
    public func pipeline(_ commands: [[String]]) async throws -> [RESPValue] {
        guard !commands.isEmpty else { return [] }
        let (map, nodes) = topology.withLock { ($0.map, $0.nodes) }
        var replies: [RESPValue]
        if let map {
            do {
                replies = try await routed(commands, map: map, nodes: nodes)
            } catch let error as StoreError where error.isTransient {
                // A master that cannot be reached may have been replaced (failover): ask the
                // others for the map, so that the next call goes where the slot lives now.
                await refreshAfterFailure(map: map, nodes: nodes)
                throw error
            }
        } else {
            replies = try await seed.send(commands)
        }
        for index in replies.indices where ClusterRedirect(replies[index]) != nil {
            replies[index] = try await follow(commands[index], from: replies[index])
        }
        return replies
    }

    /// Sends one command and returns its reply; an error reply throws a `StoreError`
    /// (transient for `LOADING`, `BUSY`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`).
    @discardableResult
    public func command(_ arguments: String...) async throws -> RESPValue {
        try Self.checked(try await pipeline([arguments])[0])
    }

    /// Checks that every master this client routes to answers `PING` (the seed alone
    /// outside a cluster), one after another. Used by health probes while a store is
    /// degraded, so that recovery does not wait for traffic.
    ///
    /// - Throws: the first node's failure (`StoreError`, transient for timeouts and lost
    ///   connections), within the command timeout per node.
    public func ping() async throws {
        try await onEveryMaster(["PING"])
    }

    /// Sends `command` (one without keys, such as `PING` or `FUNCTION LOAD`) to every
    /// master this client routes to (the seed alone outside a cluster), one after another.
    /// A cluster map known only in part (slots patched from `MOVED` replies while a full
    /// read was under way) is read whole from the seed first, so no master is missed.
    ///
    /// - Throws: the first node's failure or error reply (`StoreError`, transient for
    ///   timeouts and lost connections), within the command timeout per node.
    public func onEveryMaster(_ command: [String]) async throws {
        let (map, nodes) = topology.withLock { ($0.map, $0.nodes) }
        guard var known = map else {
            _ = try Self.checked(try await seed.send([command])[0])
            return
        }
        if !known.isComplete {
            if let fresh = try await readMap(from: seed) {
                known = fresh
                topology.withLock { $0.map = fresh }
            }
        }
        for endpoint in known.nodes {
            let node = nodes[endpoint] ?? self.node(named: endpoint)
            _ = try Self.checked(try await node.send([command])[0])
        }
    }

    /// `value`, or a `StoreError` when it is an error reply.
    public static func checked(_ value: RESPValue) throws -> RESPValue {
        guard let message = value.errorMessage else { return value }
        let code = message.prefix { $0 != " " }
        let transient = ["LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "MOVED", "ASK"].contains(String(code))
        throw StoreError("redis: \(message)", isTransient: transient)
    }

    // MARK: - Cluster routing

    /// Sends each command to the node serving its slot: one batch per node, concurrently.
    private func routed(_ commands: [[String]], map: ClusterMap, nodes: [String: RedisNode]) async throws -> [RESPValue] {
        var batches: [(node: RedisNode, indices: [Int])] = []
        for (index, command) in commands.enumerated() {
            var target = batches.first?.node ?? seed
            if let slot = try HashSlot.slot(of: command), let endpoint = map.node(for: slot) {
                target = nodes[endpoint] ?? node(named: endpoint)
            }
            if let batch = batches.firstIndex(where: { $0.node === target }) {
                batches[batch].indices.append(index)
            } else {
                batches.append((target, [index]))
            }
        }
        if batches.count == 1 { return try await batches[0].node.send(commands) }
        let plan = batches
        var replies = [RESPValue](repeating: .bulkString(nil), count: commands.count)
        try await withThrowingTaskGroup(of: (Int, [RESPValue]).self) { group in
            for (number, batch) in plan.enumerated() {
                let subset = batch.indices.map { commands[$0] }
                group.addTask { (number, try await batch.node.send(subset)) }
            }
            for try await (number, answers) in group {
                for (position, index) in plan[number].indices.enumerated() { replies[index] = answers[position] }
            }
        }
        return replies
    }

    /// Follows `MOVED` and `ASK` for one command until a node answers it.
    private func follow(_ command: [String], from first: RESPValue) async throws -> RESPValue {
        var reply = first
        var hops = 0
        while let redirect = ClusterRedirect(reply) {
            hops += 1
            guard hops <= configuration.maximumRedirects else {
                throw StoreError(
                    "redis: more than \(configuration.maximumRedirects) cluster redirections (last: \(reply.errorMessage ?? ""))",
                    isTransient: true)
            }
            let target = node(host: redirect.host.isEmpty ? configuration.host : redirect.host, port: redirect.port)
            switch redirect.kind {
            case .moved:
                await learn(slot: redirect.slot, servedBy: target)
                reply = try await target.send([command])[0]
            case .ask:
                reply = try await target.send([["ASKING"], command])[1]
            }
        }
        return reply
    }

    /// Records that `node` serves `slot` at once, then reads the whole map from that node
    /// (unless another caller is already doing so). A failed read keeps the patched map:
    /// later `MOVED` replies correct it slot by slot.
    private func learn(slot: Int, servedBy node: RedisNode) async {
        let refresh = topology.withLock { state -> Bool in
            var map = state.map ?? ClusterMap()
            map.assign(slot, to: node.endpoint)
            state.map = map
            guard !state.refreshing else { return false }
            state.refreshing = true
            return true
        }
        guard refresh else { return }
        let fresh = try? await readMap(from: node)
        topology.withLock { state in
            state.refreshing = false
            if let fresh { state.map = fresh }
        }
        if let fresh {
            for endpoint in fresh.nodes { _ = self.node(named: endpoint) }
        }
    }

    /// The slot map as `node` reports it (`CLUSTER SLOTS`); nil when it names no master.
    private func readMap(from node: RedisNode) async throws -> ClusterMap? {
        let map = try ClusterMap(slotsReply: Self.checked(try await node.send([["CLUSTER", "SLOTS"]])[0]), defaultHost: node.host)
        return map.nodes.isEmpty ? nil : map
    }

    /// Reads the map from the first node that answers, seed first (at most once per
    /// `refreshInterval`, and not while another refresh runs).
    private func refreshAfterFailure(map: ClusterMap, nodes: [String: RedisNode]) async {
        let now = NIODeadline.now()
        let go = topology.withLock { state -> Bool in
            guard !state.refreshing, now >= state.nextFailureRefresh else { return false }
            state.refreshing = true
            state.nextFailureRefresh = now + Self.refreshInterval
            return true
        }
        guard go else { return }
        var fresh: ClusterMap?
        for endpoint in [seed.endpoint] + map.nodes where fresh == nil {
            fresh = try? await readMap(from: nodes[endpoint] ?? self.node(named: endpoint))
        }
        topology.withLock { state in
            state.refreshing = false
            if let fresh { state.map = fresh }
        }
        if let fresh {
            for endpoint in fresh.nodes { _ = self.node(named: endpoint) }
        }
    }

    private func node(named endpoint: String) -> RedisNode {
        guard let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]) else {
            return seed
        }
        return node(host: String(endpoint[..<colon]), port: port)
    }

    /// The pool for `host:port`, created on first use.
    private func node(host: String, port: Int) -> RedisNode {
        let endpoint = RedisNode.endpoint(host: host, port: port)
        return topology.withLock { state in
            if let node = state.nodes[endpoint] { return node }
            let node = RedisNode(host: host, port: port, configuration: configuration, security: security, group: group)
            state.nodes[endpoint] = node
            return node
        }
    }
}
