/// How `weir serve --grpc-port` serves Envoy's rate limit service.
///
/// Value type; `Sendable`. Filled from the command line by `weir serve`, by tests with
/// port 0 and `onListening` to learn the port picked.
public struct EnvoyServiceConfiguration: Sendable {
    /// Address to listen on: an IPv4 or IPv6 literal, or `localhost` (127.0.0.1).
    public var host: String
    /// Port to listen on; 0 picks a free one (reported to `onListening` and logged).
    public var port: Int
    /// The rate limit domain Weir answers for (the filter's `domain`). Requests of any
    /// other domain are answered as unknown descriptors. Default `weir`.
    public var domain: String
    /// The answer to a descriptor Weir cannot map to a call (see `DescriptorCall`):
    /// `.allow` (default) or `.deny`. Either way it is counted in
    /// `weir_envoy_unknown_descriptors_total{reason}` and never an RPC error.
    public var unknownDescriptors: UnknownDescriptorAnswer
    /// Called once with the port the service listens on, when it does.
    public var onListening: (@Sendable (Int) -> Void)?
    /// A connection that sends no byte for this long (nanoseconds) is closed; nil for
    /// never. `weir serve` sets it, and `maxConnections`, from its `ConnectionLimits`.
    public var idleTimeout: UInt64? = nil
    /// How long (nanoseconds) a call's request may take to arrive whole, and bytes may
    /// trickle in without completing an HTTP/2 frame, before the call is ended
    /// (`DEADLINE_EXCEEDED`) or the connection closed; nil for as long as they take.
    /// `weir serve` sets it from `--request-timeout`.
    public var requestReadTimeout: UInt64? = nil
    /// RPCs open at once on one connection, at most (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`).
    public var maxConcurrentStreams = 1_024
    /// Connections open at once, at most; more are closed as they are accepted.
    public var maxConnections = 4_096
    /// The longest request message taken, in bytes; a longer one is answered
    /// `RESOURCE_EXHAUSTED` as soon as its length prefix is read. `weir serve` sets it
    /// from `--max-body-bytes`.
    public var maxMessageBytes = 1 << 20
    /// On shutdown, how long (nanoseconds) a connection may take to finish its calls
    /// after GOAWAY before it is closed; nil for as long as they take.
    public var shutdownGracePeriod: UInt64? = 10 * 1_000_000_000
    /// The longest a descriptor's `max_wait_ms` may make a call wait for room
    /// (nanoseconds; longer asks are held to it); 0 turns waiting off. `weir serve` sets
    /// it from `--max-wait-ms`.
    public var maxWait: UInt64 = 0

    public init(
        host: String = "127.0.0.1",
        port: Int,
        domain: String = "weir",
        unknownDescriptors: UnknownDescriptorAnswer = .allow,
        onListening: (@Sendable (Int) -> Void)? = nil
    ) {
        self.host = host
        self.port = port
        self.domain = domain
        self.unknownDescriptors = unknownDescriptors
        self.onListening = onListening
    }
}

/// The answer to a descriptor that names no call Weir knows.
public enum UnknownDescriptorAnswer: String, Sendable, Hashable, CaseIterable {
    /// `OK`: the descriptor does not limit the request.
    case allow
    /// `OVER_LIMIT`: the request is refused (Envoy answers 429).
    case deny
}
