import NIOCore
import WeirCore
import WeirPolicy

/// Wakes waiting calls (`Limiter`, `max_wait_ms`) with NIO's timers: a deadline on the
/// limiter's clock becomes a delay from that clock's reading now, scheduled on one of
/// `group`'s event loops.
///
/// Concurrency: thread-safe; bodies run on an event loop of `group`.
struct EventLoopWaitTimer: WaitTimer {
    let group: any EventLoopGroup
    let clock: any NanosecondClock

    func schedule(at deadline: UInt64, _ body: @escaping @Sendable () -> Void) -> WaitTimerHandle {
        let delay = deadline.subtractingSaturating(clock.now())
        let task = group.next().scheduleTask(in: .nanoseconds(Int64(clamping: delay))) { body() }
        return WaitTimerHandle { task.cancel() }
    }
}
