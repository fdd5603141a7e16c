import WeirCore

/// Runs code at a moment of the limiter's clock: what wakes a waiting call at the exact
/// time its limits let it in (`Limiter`, `maxWait`).
///
/// Time is the limiter's `NanosecondClock` (nanoseconds), so tests drive waiting with a
/// `ManualClock` and a `ManualWaitTimer`, and never sleep. A server passes one on its
/// event loops.
///
/// Concurrency: implementations are thread-safe; `body` may run on any thread.
public protocol WaitTimer: Sendable {
    /// Calls `body` once, when the clock reads `deadline` or later, unless the returned
    /// handle is cancelled first.
    func schedule(at deadline: UInt64, _ body: @escaping @Sendable () -> Void) -> WaitTimerHandle
}

/// Cancels what a `WaitTimer` scheduled; cancelling after it ran does nothing.
public struct WaitTimerHandle: Sendable {
    private let cancelBody: @Sendable () -> Void

    public init(cancel: @escaping @Sendable () -> Void) {
        self.cancelBody = cancel
    }

    public func cancel() {
        cancelBody()
    }
}
