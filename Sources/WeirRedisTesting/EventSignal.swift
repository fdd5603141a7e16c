import Synchronization
import WeirPolicy

/// Wakes a test waiting for another part's work (a lease settled after a client went
/// away, a usage report Envoy sends after its answer, a call reaching the mock
/// upstream) when that part says something changed: the waits are on events, never on
/// time. A wait whose condition never holds is ended by the suite's time limit.
///
/// As a `DecisionObserver` (`ServerConfiguration.observer`) it is pinged by every
/// decision and settlement of the server under test.
///
/// Concurrency: thread-safe; any number of waiters.
public final class EventSignal: DecisionObserver {
    private struct State {
        var generation: UInt64 = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    public init() {}

    /// Something may have changed: wakes every waiter.
    public func ping() {
        let waiters = state.withLock { state in
            state.generation &+= 1
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Checks `condition` now and again after each ping until it holds. A ping during a
    /// check is not lost: the next check follows it.
    public func wait(until condition: () async throws -> Bool) async throws {
        while true {
            let seen = state.withLock { $0.generation }
            if try await condition() { return }
            await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                let missed = state.withLock { state -> Bool in
                    guard state.generation == seen else { return true }
                    state.waiters.append(waiter)
                    return false
                }
                if missed { waiter.resume() }
            }
        }
    }

    public func decided(_ decision: LimitedDecision) { ping() }
    public func settled(_ lease: SettledLease) { ping() }
    public func waited(_ outcome: WaitOutcome, nanoseconds: UInt64) { ping() }
}
