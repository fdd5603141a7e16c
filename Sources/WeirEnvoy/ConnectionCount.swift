import NIOCore
import Synchronization

/// The connections open on one port (`weir serve`'s HTTP port, the gRPC port), counted
/// as they are accepted and closed, so that those beyond a limit are refused.
///
/// Concurrency: thread-safe (an atomic); shared by every connection of one port.
public final class ConnectionCount: Sendable {
    private let count = Atomic<Int>(0)

    public init() {}

    /// Connections open now.
    public var open: Int { count.load(ordering: .relaxed) }

    /// Counts `channel` as open until it closes, and returns true; or returns false
    /// (counting nothing) when `limit` connections are open already.
    public func open(_ channel: any Channel, limit: Int) -> Bool {
        guard count.add(1, ordering: .relaxed).newValue <= limit else {
            count.subtract(1, ordering: .relaxed)
            return false
        }
        channel.closeFuture.whenComplete { _ in self.count.subtract(1, ordering: .relaxed) }
        return true
    }
}
