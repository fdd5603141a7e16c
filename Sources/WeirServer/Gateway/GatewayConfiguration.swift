import Foundation

/// How `weir serve --upstream URL` reaches the model API it stands in front of.
///
/// A value; `buildApplication(configuration:)` adds the gateway routes when
/// `ServerConfiguration.gateway` holds one.
public struct GatewayConfiguration: Sendable {
    /// Where requests go: scheme (`http` or `https`), host, optional port and path
    /// prefix, e.g. `https://api.minimax.io` or `http://127.0.0.1:9000/prefix`. A request
    /// for `/v1/t2a_v2` goes to `<upstream>/v1/t2a_v2`.
    public var upstream: URL
    /// The upstream's own credential: sent as `Authorization: Bearer <key>` in place of
    /// the client's Weir key. Nil passes the client's `Authorization` through.
    public var upstreamKey: String?
    /// The longest the upstream may stay silent, in nanoseconds: until the response
    /// head arrives, and then between two pieces of the body. Default 300 s (music
    /// generation answers only when the piece is done).
    public var timeout: UInt64
    /// Forward requests for paths outside the gateway table untouched (no limits).
    /// Off by default: such paths are answered 404.
    public var forwardUnknown: Bool
    /// Time-to-live of the lease a call holds while it runs, in nanoseconds: the
    /// safety net for a call whose end Weir never sees. Default 1 hour.
    public var leaseTTL: UInt64
    /// Most connections kept open to the upstream (the pool's size of the gateway's one
    /// client). Default 1024.
    public var maxConnections: Int
    /// Largest non-streaming upstream body read (to find its usage), in bytes; a
    /// larger one is answered 502. Default 64 MiB.
    public var maxResponseSize: Int

    public init(
        upstream: URL,
        upstreamKey: String? = nil,
        timeout: UInt64 = 300_000_000_000,
        forwardUnknown: Bool = false,
        leaseTTL: UInt64 = 3_600_000_000_000,
        maxConnections: Int = 1024,
        maxResponseSize: Int = 64 << 20
    ) {
        self.upstream = upstream
        self.upstreamKey = upstreamKey
        self.timeout = timeout
        self.forwardUnknown = forwardUnknown
        self.leaseTTL = leaseTTL
        self.maxConnections = maxConnections
        self.maxResponseSize = maxResponseSize
    }

    /// Why an upstream address cannot be used.
    public struct InvalidUpstream: Error, CustomStringConvertible {
        public var description: String
    }

    /// Parses and checks an upstream address: `http` or `https`, a host, no query or
    /// fragment. A trailing `/` is dropped.
    public static func upstreamURL(_ text: String) throws(InvalidUpstream) -> URL {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased() else {
            throw InvalidUpstream(description: "--upstream \(text): not a URL (expected e.g. https://api.minimax.io)")
        }
        guard scheme == "http" || scheme == "https" else {
            throw InvalidUpstream(description: "--upstream \(text): scheme must be http or https, got \(scheme)")
        }
        guard let host = components.host, !host.isEmpty else {
            throw InvalidUpstream(description: "--upstream \(text): no host")
        }
        guard components.query == nil, components.fragment == nil else {
            throw InvalidUpstream(description: "--upstream \(text): must not have a query or fragment")
        }
        var trimmed = text
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let url = URL(string: trimmed) else {
            throw InvalidUpstream(description: "--upstream \(text): not a URL")
        }
        return url
    }
}
