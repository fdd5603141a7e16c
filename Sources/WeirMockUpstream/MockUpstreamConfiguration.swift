import Logging
import NIOCore

/// Settings of `weir mock-upstream`, the development stand-in for the model API.
///
/// Every setting here is a default; a request can override it with `x-mock-*` headers
/// (see `MockUpstream`).
public struct MockUpstreamConfiguration: Sendable {
    /// Address to listen on (default 127.0.0.1).
    public var host: String
    /// Port; 0 picks a free one (the start-up line says which).
    public var port: Int
    /// How long a music generation takes, in milliseconds (default 2000).
    public var musicMilliseconds: Int
    /// Tokens of a chat reply when the request sets no `max_tokens` (default 64).
    public var completionTokens: Int
    /// Answer every Nth request with `failStatus` (nil: never).
    public var failEvery: Int?
    /// The status of configured failures (default 500).
    public var failStatus: Int
    /// Milliseconds between two events of a stream (default 0).
    public var eventIntervalMilliseconds: Int
    /// When set, requests must carry `Authorization: Bearer <apiKey>` (401 otherwise).
    public var apiKey: String?
    /// The event loops; nil for NIO's shared group.
    public var eventLoopGroup: (any EventLoopGroup)?
    public var logger: Logger

    public init(
        host: String = "127.0.0.1",
        port: Int = 9090,
        musicMilliseconds: Int = 2000,
        completionTokens: Int = 64,
        failEvery: Int? = nil,
        failStatus: Int = 500,
        eventIntervalMilliseconds: Int = 0,
        apiKey: String? = nil,
        eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger = Logger(label: "weir-mock-upstream")
    ) {
        self.host = host
        self.port = port
        self.musicMilliseconds = musicMilliseconds
        self.completionTokens = completionTokens
        self.failEvery = failEvery
        self.failStatus = failStatus
        self.eventIntervalMilliseconds = eventIntervalMilliseconds
        self.apiKey = apiKey
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }
}
