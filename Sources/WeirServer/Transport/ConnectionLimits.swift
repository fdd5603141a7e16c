import NIOCore

/// What one client may hold of the HTTP port (decision API, admin API, gateway, dashboard,
/// operations), so that idle, slow or greedy clients cannot take `weir serve` down.
///
/// - A connection with no request open and no answer pending is closed after
///   `idleTimeout` without a byte from the client (a request in flight, an upstream call
///   or a stream being relayed is never cut by it).
/// - A request must arrive whole, head and body, within `requestReadTimeout` of its first
///   byte; a client that sends it a byte at a time (slowloris) gets 408 and the
///   connection is closed.
/// - At most `maxConnections` connections are open at once; the ones beyond are closed as
///   they are accepted, not queued.
/// - A request head may have `maxHeaderCount` fields of `maxHeaderBytes` bytes in all
///   (names and values) at most; beyond, 431 and the connection is closed. (NIO's parser
///   refuses a head over 80 KiB before that: 400 and closed.)
/// - Requests pipelined behind one being answered wait in memory up to about
///   `maxQueuedBytes`; beyond, the connection stops reading until they are handled (the
///   client's own sends then wait in TCP).
public struct ConnectionLimits: Sendable, Hashable {
    /// Nanoseconds. Default 75 s (nginx's keep-alive timeout).
    public var idleTimeout: UInt64
    /// Nanoseconds. Default 30 s.
    public var requestReadTimeout: UInt64
    /// Default 4,096.
    public var maxConnections: Int
    /// Default 100.
    public var maxHeaderCount: Int
    /// Bytes. Default 16 KiB.
    public var maxHeaderBytes: Int
    /// Bytes. Default 1 MiB.
    public var maxQueuedBytes: Int

    public init(
        idleTimeout: UInt64 = 75_000_000_000, requestReadTimeout: UInt64 = 30_000_000_000, maxConnections: Int = 4_096,
        maxHeaderCount: Int = 100, maxHeaderBytes: Int = 16 << 10, maxQueuedBytes: Int = 1 << 20
    ) {
        self.idleTimeout = idleTimeout
        self.requestReadTimeout = requestReadTimeout
        self.maxConnections = maxConnections
        self.maxHeaderCount = maxHeaderCount
        self.maxHeaderBytes = maxHeaderBytes
        self.maxQueuedBytes = maxQueuedBytes
    }

    /// Whether `head`'s fields are within the bounds.
    func admits(_ headers: some Sequence<(name: String, value: String)>) -> Bool {
        var count = 0
        var bytes = 0
        for (name, value) in headers {
            count += 1
            bytes += name.utf8.count + value.utf8.count
            if count > maxHeaderCount || bytes > maxHeaderBytes { return false }
        }
        return true
    }
}
