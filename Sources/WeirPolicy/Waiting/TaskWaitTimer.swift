import WeirCore

/// A `WaitTimer` on Swift concurrency: each scheduled body runs in a task that sleeps
/// until its deadline (read on `clock`). For library users without an event loop;
/// `weir serve` uses NIO's timers instead (no task per timer).
///
/// Concurrency: thread-safe; bodies run on the global concurrent executor.
public struct TaskWaitTimer: WaitTimer {
    private let clock: any NanosecondClock

    /// - Parameter clock: the limiter's clock (the store's).
    public init(clock: any NanosecondClock = SystemClock()) {
        self.clock = clock
    }

    public func schedule(at deadline: UInt64, _ body: @escaping @Sendable () -> Void) -> WaitTimerHandle {
        let delay = deadline.subtractingSaturating(clock.now())
        let task = Task {
            if delay > 0 { try await Task.sleep(nanoseconds: delay) }
            body()
        }
        return WaitTimerHandle { task.cancel() }
    }
}
