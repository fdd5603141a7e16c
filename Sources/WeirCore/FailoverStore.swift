import Synchronization

/// A shared store (Redis) with a policy for when it fails: decisions go to the primary
/// store while it answers, and follow `Mode` while it does not.
///
/// **When the primary counts as failed.** A transient `StoreError` (timeout, lost or
/// refused connection, Redis loading or busy) marks the store degraded. While degraded,
/// calls do not wait on the primary: they follow the mode at once, and one call at a
/// time, at most every `probeInterval`, tries the primary again. The first answer from
/// the primary ends the degraded state by itself. A permanent `StoreError` (a script
/// error: a bug, not an outage) is rethrown and does not change the state.
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
/// run outside it.
public final class FailoverStore: RateLimitStore {
    /// What decides while the primary is failing.
    public enum Mode: String, Sendable, CaseIterable {
        case deny, allow, local
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
    private let clock: any NanosecondClock
    private let probeInterval: UInt64
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
        /// While degraded: when the next probe may go to the primary.
        var probeAt: UInt64 = 0
        var probing = false
        var lastError: String?
        var fallbackDecisions: UInt64 = 0
        var outages: UInt64 = 0
    }

    /// - Parameters:
    ///   - clock: times the probes (a monotonic clock in production).
    ///   - probeInterval: nanoseconds between attempts on a failing primary; default 250 ms.
    ///   - onChange: called once per change of state (not per call), outside the lock, on
    ///     the thread of the call that saw the change.
    public init(
        primary: any RateLimitStore, fallback: InMemoryStore, mode: Mode,
        clock: any NanosecondClock = SystemClock(), probeInterval: UInt64 = 250 * Nanoseconds.perMillisecond,
        onChange: (@Sendable (Change) -> Void)? = nil
    ) {
        self.primary = primary
        self.fallback = fallback
        self.mode = mode
        self.clock = clock
        self.probeInterval = probeInterval
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

    // MARK: - State

    /// Whether this call goes to the primary: always when healthy; while degraded, one
    /// probe at a time once `probeAt` has passed.
    private func shouldTryPrimary() -> Bool {
        let now = clock.now()
        return state.withLock { state in
            guard state.degraded else { return true }
            guard !state.probing, now >= state.probeAt else { return false }
            state.probing = true
            return true
        }
    }

    private func recovered() {
        let wasDegraded = state.withLock { state in
            defer {
                state.degraded = false
                state.probing = false
            }
            return state.degraded
        }
        if wasDegraded { onChange?(.recovered) }
    }

    private func endProbe() {
        state.withLock { $0.probing = false }
    }

    private func failed(_ error: StoreError) {
        let now = clock.now()
        let began = state.withLock { state in
            let began = !state.degraded
            if began { state.outages += 1 }
            state.degraded = true
            state.probing = false
            state.probeAt = now &+ probeInterval
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
