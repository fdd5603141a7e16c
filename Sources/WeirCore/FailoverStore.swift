import Synchronization

/// A shared store (Redis) with a policy for when it fails: decisions go to the primary
/// store while it answers, and follow `Mode` while it does not.
///
/// **When the primary counts as failed.** A transient `StoreError` (timeout, lost or
/// refused connection, Redis loading or busy), from a call or from a health probe, marks
/// the store degraded. While degraded, calls do not wait on the primary: they follow the
/// mode at once. A permanent `StoreError` (a script error: a bug, not an outage) is
/// rethrown and does not change the state.
///
/// **Recovery by itself.** While degraded, the primary is probed (`RateLimitStore.probe`)
/// on a capped exponential backoff with jitter: the n-th wait after the outage began is
/// drawn from [d/2, d] with d = min(`Backoff.maximum`, `Backoff.initial` x 2^n). A probe
/// is made by whichever comes first once it is due: `probeIfDue()` (run by a background
/// service, independent of traffic) or a call (which then goes to the primary, as the
/// probe). The first answer ends the degraded state, so health reports the truth at most
/// `Backoff.maximum` after the primary answers again, with or without traffic. While
/// healthy, `probeIfDue()` checks the primary every `Backoff.healthInterval`, so an
/// outage is seen without traffic too.
///
/// **Modes.**
/// - `local`: an in-memory limiter with the same rules decides (its usage starts empty:
///   each instance then limits on its own, up to N times the limit across N instances).
/// - `allow`: every call is allowed; the in-memory store issues the lease (in shadow
///   mode, so it consumes nothing) so that the caller's settle still succeeds.
/// - `deny`: every call fails with a transient `StoreError` (a server answers 503).
///
/// **Leases.** Leases issued by the fallback are settled there (told apart by
/// `InMemoryStore.issued(_:)`, whose ids never collide with `RedisStore`'s); all others
/// go to the primary, even while degraded (a settle is not a decision: failing it says
/// what happened, and the lease expires in Redis by its TTL).
///
/// Concurrency: thread-safe. The state is one small `Mutex`; the calls to the stores
/// run outside it. At most one probe (by a call or by `probeIfDue`) is in flight.
public final class FailoverStore: RateLimitStore {
    /// What decides while the primary is failing.
    public enum Mode: String, Sendable, CaseIterable {
        case deny, allow, local
    }

    /// When the primary is probed, in nanoseconds.
    public struct Backoff: Sendable, Hashable {
        /// The first wait after an outage began (before jitter). Default 100 ms.
        public var initial: UInt64
        /// The longest wait between two probes of a failing primary (before jitter).
        /// Default 2 s.
        public var maximum: UInt64
        /// Between two health checks of a healthy primary by `probeIfDue()`. Default 1 s.
        public var healthInterval: UInt64

        public init(
            initial: UInt64 = 100 * Nanoseconds.perMillisecond, maximum: UInt64 = 2 * Nanoseconds.perSecond,
            healthInterval: UInt64 = Nanoseconds.perSecond
        ) {
            self.initial = max(1, initial)
            self.maximum = max(self.initial, maximum)
            self.healthInterval = max(1, healthInterval)
        }

        /// The wait (before jitter) after `failures` failed attempts since the outage began.
        public func delay(afterFailures failures: Int) -> UInt64 {
            let shift = min(failures, 62)
            let (scaled, overflow) = initial.multipliedReportingOverflow(by: 1 << UInt64(shift))
            return overflow ? maximum : min(maximum, scaled)
        }
    }

    /// A snapshot of the failover state, for `/readyz` and metrics.
    public struct Health: Sendable, Hashable {
        /// Whether the primary is failing now.
        public var isDegraded: Bool
        /// The primary's last failure, for operators; nil before the first one.
        public var lastError: String?
        /// Decisions made by the mode instead of the primary, since start.
        public var fallbackDecisions: UInt64
        /// Times the store went from healthy to degraded, since start.
        public var outages: UInt64
    }

    public let primary: any RateLimitStore
    /// The in-memory store of the `local` and `allow` modes.
    public let fallback: InMemoryStore
    public let mode: Mode
    public let backoff: Backoff
    private let clock: any NanosecondClock
    private let jitter: @Sendable (UInt64) -> UInt64
    private let onChange: (@Sendable (Change) -> Void)?
    private let state = Mutex(State())

    /// A change of state, for operators' logs: the primary began failing (with its error),
    /// or answered again.
    public enum Change: Sendable, Equatable {
        case degraded(error: String)
        case recovered
    }

    private struct State {
        var degraded = false
        /// While degraded: when the next probe may go to the primary. While healthy: when
        /// `probeIfDue()` next checks it.
        var probeAt: UInt64 = 0
        var probing = false
        /// Failed attempts since the outage began (sets the backoff).
        var failures = 0
        var lastError: String?
        var fallbackDecisions: UInt64 = 0
        var outages: UInt64 = 0
    }

    /// - Parameters:
    ///   - clock: times the probes (a monotonic clock in production).
    ///   - backoff: when a failing primary is probed, and a healthy one checked.
    ///   - jitter: draws the wait actually used from a nominal one `d`; must return a
    ///     value in [d/2, d] (default: uniformly at random). Tests pass a fixed choice.
    ///   - onChange: called once per change of state (not per call), outside the lock, on
    ///     the thread of the call or probe that saw the change.
    public init(
        primary: any RateLimitStore, fallback: InMemoryStore, mode: Mode,
        clock: any NanosecondClock = SystemClock(), backoff: Backoff = Backoff(),
        jitter: @escaping @Sendable (UInt64) -> UInt64 = FailoverStore.randomJitter,
        onChange: (@Sendable (Change) -> Void)? = nil
    ) {
        self.primary = primary
        self.fallback = fallback
        self.mode = mode
        self.clock = clock
        self.backoff = backoff
        self.jitter = jitter
        self.onChange = onChange
    }

    public var health: Health {
        state.withLock {
            Health(isDegraded: $0.degraded, lastError: $0.lastError, fallbackDecisions: $0.fallbackDecisions, outages: $0.outages)
        }
    }

    // MARK: - RateLimitStore

    public func acquire(_ request: AdmissionRequest) async throws -> Decision {
        guard shouldTryPrimary() else { return try fallbackDecision(request, error: nil) }
        do {
            let decision = try await primary.acquire(request)
            recovered()
            return decision
        } catch let error as StoreError where error.isTransient {
            failed(error)
            return try fallbackDecision(request, error: error)
        } catch {
            endProbe()
            throw error
        }
    }

    public func settle(_ lease: LeaseID, actualUnits: UInt64) async throws -> Settlement {
        if fallback.issued(lease) {
            return try fallback.settle(lease, actualUnits: actualUnits)
        }
        return try await primary.settle(lease, actualUnits: actualUnits)
    }

    /// The primary's statuses; while degraded in `local` mode, the fallback's.
    public func status(of key: LimitKey, limits: LimitSet) async throws -> LimitStatuses {
        if mode == .local, state.withLock({ $0.degraded }) {
            return fallback.status(of: key, limits: limits)
        }
        return try await primary.status(of: key, limits: limits)
    }

    /// A wait drawn uniformly from [d/2, d]: instances that lost Redis together do not
    /// probe it in step.
    @Sendable
    public static func randomJitter(_ nominal: UInt64) -> UInt64 {
        nominal / 2 + UInt64.random(in: 0...(nominal - nominal / 2))
    }

    // MARK: - Probes

    /// Probes the primary if a probe is due at the clock's time: while degraded, once the
    /// backoff has passed (a success ends the outage); while healthy, once
    /// `Backoff.healthInterval` has passed (a transient failure begins one). Does nothing
    /// while another probe is in flight.
    ///
    /// - Returns: nanoseconds until the next probe is due (from the clock's time after
    ///   this one): how long a background loop sleeps before calling again.
    ///
    /// Suspends for the probe (at most the primary's command timeout).
    @discardableResult
    public func probeIfDue() async -> UInt64 {
        let now = clock.now()
        if state.withLock({ Self.beginProbe(&$0, now: now) }) {
            do {
                try await primary.probe()
                recovered()
            } catch let error as StoreError where error.isTransient {
                failed(error)
            } catch {
                // A permanent failure (a reply the store cannot read) is no outage: checked
                // again at the next health interval.
                endProbe(next: clock.now() &+ backoff.healthInterval)
            }
        }
        let after = clock.now()
        return state.withLock { state in
            // Another probe in flight: look again after the shortest wait.
            if state.probing { return backoff.initial }
            return state.probeAt > after ? state.probeAt - after : 0
        }
    }

    // MARK: - State

    /// Whether this call goes to the primary: always when healthy; while degraded, as
    /// the probe, once `probeAt` has passed and no other probe is in flight.
    private func shouldTryPrimary() -> Bool {
        let now = clock.now()
        return state.withLock { state in
            guard state.degraded else { return true }
            return Self.beginProbe(&state, now: now)
        }
    }

    /// Starts a probe if one is due at `now` and none is in flight (the caller holds the lock).
    private static func beginProbe(_ state: inout State, now: UInt64) -> Bool {
        guard !state.probing, now >= state.probeAt else { return false }
        state.probing = true
        return true
    }

    /// The primary answered (a call or a probe).
    private func recovered() {
        let next = clock.now() &+ backoff.healthInterval
        let wasDegraded = state.withLock { state in
            let was = state.degraded
            state.degraded = false
            state.failures = 0
            // A call's answer while healthy does not move the next health check.
            if was || state.probing { state.probeAt = next }
            state.probing = false
            return was
        }
        if wasDegraded { onChange?(.recovered) }
    }

    private func endProbe(next: UInt64? = nil) {
        state.withLock { state in
            state.probing = false
            if let next, !state.degraded { state.probeAt = next }
        }
    }

    /// The primary failed transiently (a call or a probe): the outage begins or goes on,
    /// and the next probe waits the next step of the backoff.
    private func failed(_ error: StoreError) {
        let now = clock.now()
        let began = state.withLock { state in
            let began = !state.degraded
            if began {
                state.outages += 1
                state.failures = 0
            }
            state.degraded = true
            state.probing = false
            state.probeAt = now &+ jitter(backoff.delay(afterFailures: state.failures))
            state.failures += 1
            state.lastError = error.message
            return began
        }
        if began { onChange?(.degraded(error: error.message)) }
    }

    private func fallbackDecision(_ request: AdmissionRequest, error: StoreError?) throws -> Decision {
        state.withLock { $0.fallbackDecisions += 1 }
        switch mode {
        case .local:
            return fallback.acquire(request)
        case .allow:
            var shadowed = request
            shadowed.limits.shadow = true
            return fallback.acquire(shadowed)
        case .deny:
            let reason = error?.message ?? state.withLock { $0.lastError } ?? "unreachable"
            throw StoreError("store unavailable (on-store-failure: deny): \(reason)", isTransient: true)
        }
    }
}
