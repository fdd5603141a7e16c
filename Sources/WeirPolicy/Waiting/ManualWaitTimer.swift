import Synchronization
import WeirCore

/// A `WaitTimer` that fires only when told (`runDue`), by a `ManualClock`: for tests and
/// `weir simulate`.
///
/// Concurrency: thread-safe; bodies run on the thread that calls `runDue`, outside its
/// lock (a body may schedule more).
public final class ManualWaitTimer: WaitTimer {
    private let clock: ManualClock
    /// The bodies scheduled, by sequence number, and a min-heap of (deadline, sequence)
    /// over them: cancelling removes the body, and the heap skips what has no body left.
    private struct Schedule {
        var next = 0
        var bodies: [Int: @Sendable () -> Void] = [:]
        var heap: [(deadline: UInt64, sequence: Int)] = []

        mutating func push(_ entry: (deadline: UInt64, sequence: Int)) {
            heap.append(entry)
            var child = heap.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                guard Self.earlier(heap[child], heap[parent]) else { break }
                heap.swapAt(child, parent)
                child = parent
            }
        }

        /// The earliest entry whose body is still scheduled, left in place.
        mutating func peek() -> (deadline: UInt64, sequence: Int)? {
            while let first = heap.first {
                if bodies[first.sequence] != nil { return first }
                pop()
            }
            return nil
        }

        mutating func pop() {
            let last = heap.removeLast()
            guard !heap.isEmpty else { return }
            heap[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                let right = left + 1
                var earliest = parent
                if left < heap.count, Self.earlier(heap[left], heap[earliest]) { earliest = left }
                if right < heap.count, Self.earlier(heap[right], heap[earliest]) { earliest = right }
                guard earliest != parent else { return }
                heap.swapAt(parent, earliest)
                parent = earliest
            }
        }

        static func earlier(_ a: (deadline: UInt64, sequence: Int), _ b: (deadline: UInt64, sequence: Int)) -> Bool {
            (a.deadline, a.sequence) < (b.deadline, b.sequence)
        }
    }
    private let schedule = Mutex(Schedule())
    /// Tasks waiting for something to be scheduled (`waitForPending`).
    private let watchers = Mutex<[CheckedContinuation<Void, Never>]>([])

    public init(clock: ManualClock) {
        self.clock = clock
    }

    public func schedule(at deadline: UInt64, _ body: @escaping @Sendable () -> Void) -> WaitTimerHandle {
        let id = schedule.withLock { schedule in
            let id = schedule.next
            schedule.next += 1
            schedule.bodies[id] = body
            schedule.push((deadline, id))
            return id
        }
        for watcher in watchers.withLock({ watchers in defer { watchers = [] }; return watchers }) { watcher.resume() }
        return WaitTimerHandle { [weak self] in _ = self?.schedule.withLock { $0.bodies.removeValue(forKey: id) } }
    }

    /// Bodies scheduled and not yet run or cancelled.
    public var pending: Int { schedule.withLock { $0.bodies.count } }

    /// The earliest deadline scheduled, if any.
    public var nextDeadline: UInt64? { schedule.withLock { $0.peek()?.deadline } }

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
            let due: (@Sendable () -> Void)? = schedule.withLock { schedule in
                guard let first = schedule.peek(), first.deadline <= now else { return nil }
                schedule.pop()
                return schedule.bodies.removeValue(forKey: first.sequence)
            }
            guard let due else { return ran }
            due()
            ran += 1
        }
    }
}
