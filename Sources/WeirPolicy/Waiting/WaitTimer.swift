import Synchronization
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

/// A `WaitTimer` that fires only when told (`runDue`), by a `ManualClock`: for tests and
/// `weir simulate`.
///
/// Concurrency: thread-safe; bodies run on the thread that calls `runDue`, outside its
/// lock (a body may schedule more).
public final class ManualWaitTimer: WaitTimer {
    private let clock: ManualClock
    private struct Entry {
        var deadline: UInt64
        var sequence: Int
        var body: @Sendable () -> Void
    }
    private let entries = Mutex<(next: Int, scheduled: [Int: Entry])>((0, [:]))
    /// Tasks waiting for something to be scheduled (`waitForPending`).
    private let watchers = Mutex<[CheckedContinuation<Void, Never>]>([])

    public init(clock: ManualClock) {
        self.clock = clock
    }

    public func schedule(at deadline: UInt64, _ body: @escaping @Sendable () -> Void) -> WaitTimerHandle {
        let id = entries.withLock { state in
            let id = state.next
            state.next += 1
            state.scheduled[id] = Entry(deadline: deadline, sequence: id, body: body)
            return id
        }
        for watcher in watchers.withLock({ watchers in defer { watchers = [] }; return watchers }) { watcher.resume() }
        return WaitTimerHandle { [weak self] in _ = self?.entries.withLock { $0.scheduled.removeValue(forKey: id) } }
    }

    /// Bodies scheduled and not yet run or cancelled.
    public var pending: Int { entries.withLock { $0.scheduled.count } }

    /// Returns once at least `count` bodies are pending: a test waits on this for a
    /// call to have begun waiting, rather than on time.
    public func waitForPending(_ count: Int) async {
        while pending < count {
            await withCheckedContinuation { (watcher: CheckedContinuation<Void, Never>) in
                let ready = watchers.withLock { watchers in
                    if pending >= count { return true }
                    watchers.append(watcher)
                    return false
                }
                if ready { watcher.resume() }
            }
        }
    }

    /// The earliest deadline scheduled, if any.
    public var nextDeadline: UInt64? { entries.withLock { $0.scheduled.values.map(\.deadline).min() } }

    /// Moves the clock forward to `time`, stopping at each deadline on the way to run
    /// what is due then, as a real timer fires: each body sees the clock at its own
    /// deadline. (`time` before the clock's reading only runs what is due.)
    public func advance(to time: UInt64) {
        while let next = nextDeadline, next <= time {
            if next > clock.now() { clock.set(to: next) }
            runDue()
        }
        if time > clock.now() { clock.set(to: time) }
        runDue()
    }

    /// Runs every body whose deadline the clock has reached, earliest first (ties in
    /// the order scheduled), including ones scheduled by those bodies that are due too.
    ///
    /// - Returns: how many ran.
    @discardableResult
    public func runDue() -> Int {
        var ran = 0
        while true {
            let now = clock.now()
            let due: Entry? = entries.withLock { state in
                guard let first = state.scheduled.values
                    .filter({ $0.deadline <= now })
                    .min(by: { ($0.deadline, $0.sequence) < ($1.deadline, $1.sequence) })
                else { return nil }
                state.scheduled.removeValue(forKey: first.sequence)
                return first
            }
            guard let due else { return ran }
            due.body()
            ran += 1
        }
    }
}

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
