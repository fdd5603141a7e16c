import Logging
import NIOCore
import Synchronization
import WeirCore

/// Gateway settlements that the shared store could not take (Redis unreachable), kept
/// and sent again once it answers, so that a slot taken before an outage is freed when
/// the outage ends rather than at the lease's TTL (an hour for gateway calls).
///
/// A client of the decision API retries its own settlement after a 503; behind the
/// gateway Weir is the client, so it does the same here (`SettlementRetryService` calls
/// `retry` every half second).
///
/// **Bounded.** At most `capacity` settlements wait (24 bytes each); when full, the
/// oldest is dropped and counted (its lease then frees itself at its TTL, as it would
/// have without this). An entry is dropped too once its lease's TTL has passed: the
/// store has freed the slot itself, and the settlement would be refused. Settlements
/// still waiting when the server stops are lost the same way (freed at their TTL).
///
/// **At most once.** A settlement whose command timed out may have been applied in
/// Redis all the same; sent again, it is refused as already settled, so no call is
/// charged twice.
///
/// **Order and cost.** `retry` sends the oldest first and stops at the first that finds
/// the store still unavailable, so an outage costs one attempt per round (at most the
/// store's command timeout), not one per waiting settlement.
///
/// **Seen.** It logs when settlements begin to wait (a warning) and when the last of
/// them has been sent (a notice), once each per outage, not per settlement.
///
/// Concurrency: thread-safe (one `Mutex`, held only to add or take entries); `retry` is
/// called by one task at a time.
final class SettlementRetries: Sendable {
    struct Entry: Sendable, Equatable {
        let lease: LeaseID
        let units: UInt64
        /// When the lease's TTL has surely ended (the clock's nanoseconds): given up
        /// after that.
        let expiresAt: UInt64
    }

    /// What one attempt came to.
    enum Outcome: Sendable {
        /// The store answered (settled, or refused the lease as unknown, settled or
        /// expired): nothing more to do.
        case answered
        /// The store could not be reached: keep it for the next round.
        case unavailable
    }

    /// Most settlements kept at once.
    let capacity: Int
    /// The gateway's lease TTL, in nanoseconds.
    let leaseTTL: UInt64
    private let clock: any NanosecondClock
    private let logger: Logger
    private struct State {
        var waiting = CircularBuffer<Entry>()
        var dropped = 0
    }
    private let state = Mutex(State())

    /// - Parameters:
    ///   - capacity: most settlements kept (at least 1).
    ///   - leaseTTL: the TTL of the leases it settles (nanoseconds).
    ///   - clock: the server's clock.
    ///   - logger: where the start and the end of a wait are told.
    init(
        capacity: Int = 100_000, leaseTTL: UInt64 = 3_600_000_000_000, clock: any NanosecondClock = SystemClock(),
        logger: Logger = Logger(label: "weir", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.capacity = max(1, capacity)
        self.leaseTTL = leaseTTL
        self.clock = clock
        self.logger = logger
    }

    /// Settlements waiting.
    var count: Int { state.withLock { $0.waiting.count } }

    /// Settlements given up because the queue was full (their leases free themselves
    /// at their TTL).
    var dropped: Int { state.withLock { $0.dropped } }

    /// Keeps the settlement of `lease` for later, given up a lease TTL from now: an upper
    /// bound of its expiry, read only when the store could not be reached (the lease
    /// began earlier; one sent after its true expiry is refused, harmlessly).
    func add(lease: LeaseID, units: UInt64) {
        add(Entry(lease: lease, units: units, expiresAt: clock.now() &+ leaseTTL))
    }

    /// Keeps a settlement for later; drops the oldest when full.
    func add(_ entry: Entry) {
        let first = state.withLock { state in
            if state.waiting.count >= capacity {
                state.waiting.removeFirst()
                state.dropped += 1
            }
            state.waiting.append(entry)
            return state.waiting.count == 1
        }
        if first { logger.warning("gateway settlements wait for the store to answer") }
    }

    /// `retry(now:settle:)` at the clock's time.
    @discardableResult
    func retry(settle: (Entry) async -> Outcome) async -> Int {
        await retry(now: clock.now(), settle: settle)
    }

    /// Sends the waiting settlements through `settle`, oldest first, until one finds the
    /// store unavailable (it and those after it wait for the next round). Entries whose
    /// TTL ended by `now` are dropped unsent.
    ///
    /// - Returns: how many the store answered this round.
    @discardableResult
    func retry(now: UInt64, settle: (Entry) async -> Outcome) async -> Int {
        var answered = 0
        defer {
            if answered > 0, count == 0 { logger.notice("gateway settlements sent again", metadata: ["last_round": "\(answered)"]) }
        }
        while let entry = state.withLock({ state -> Entry? in
            while let first = state.waiting.first, first.expiresAt <= now { state.waiting.removeFirst() }
            return state.waiting.popFirst()
        }) {
            switch await settle(entry) {
            case .answered:
                answered += 1
            case .unavailable:
                // Back at the front, ahead of any added meanwhile (they are younger).
                state.withLock { state in
                    if state.waiting.count >= capacity {
                        state.dropped += 1
                    } else {
                        state.waiting.prepend(entry)
                    }
                }
                return answered
            }
        }
        return answered
    }

    /// Whether `error` says the store could not be reached (worth retrying), as opposed
    /// to an answer about the lease.
    static func isUnavailable(_ error: any Error) -> Bool {
        (error as? StoreError)?.isTransient == true
    }
}
