import Synchronization
import WeirCore

/// The front door of Weir: every shape (the decision API, the gateway, the Envoy
/// service, the Hummingbird middleware, `weir simulate`) resolves, decides, records and
/// settles through one `Limiter`, and nothing else in production calls a
/// `RateLimitStore`'s `acquire` or `settle`.
///
/// - **Resolve:** (account, API, model) to a rule, a tier and a limit key, through the
///   current catalogue and the account's profile (`profiles`: the catalogue's own
///   account, with a server's registry merged in).
/// - **Decide:** one `AdmissionRequest` to the store, all dimensions at once.
/// - **Record:** every decision goes to the `observer` (metrics, refusal history), once.
/// - **Settle:** a lease with the units actually used.
///
/// **At once or later.** Whether the store answers at once is settled when the limiter
/// is made: an `InMemoryStore` never suspends, so `acquire` and `settle` answer
/// `Pending.ready`, on the caller's thread (an event loop decides without leaving it,
/// and without a closure or task made for it). Any other store (Redis) answers
/// `Pending.later`: it is awaited in a task, and the completion runs on that task's
/// thread. `decide` and `settled` are the same steps awaited, for callers already in a task.
///
/// The catalogue can be replaced while calls are decided (a config reload): each call
/// is resolved against one catalogue, the one current when it started. Usage already
/// recorded in the store is kept across a replacement.
///
/// Concurrency: thread-safe. A decision takes one short lock to read the current
/// catalogue, then whatever the store takes.
public final class Limiter: Sendable {
    /// Where the usage lives (read-only uses: statuses for usage reports and dashboards).
    public let store: any RateLimitStore
    /// `store`, when it answers at once.
    private let immediate: InMemoryStore?
    private let current: Mutex<Catalogue>
    private let profiles: @Sendable (String, Catalogue) -> AccountProfile
    private let observer: (any DecisionObserver)?
    /// The calls waiting for room (`maxWait`); nil when waiting is not set up.
    private let waitRoom: WaitRoom?
    /// `catalogue.waitsByDefault`, readable without the catalogue's lock.
    private let ruleWaits: Atomic<Bool>

    /// Creates a limiter.
    ///
    /// - Parameters:
    ///   - profiles: the profile of an account id under a catalogue. Defaults to the
    ///     catalogue's own account of that id, else a new account (lowest tier, no
    ///     overrides). A server merges its registry in here.
    ///   - observer: told of every decision and settlement; nil for none.
    ///   - waiting: how calls that ask to wait (`maxWait`) are woken and how many may
    ///     wait at once; nil to decide every call at once.
    public init(
        catalogue: Catalogue,
        store: any RateLimitStore,
        profiles: (@Sendable (String, Catalogue) -> AccountProfile)? = nil,
        observer: (any DecisionObserver)? = nil,
        waiting: WaitSettings? = nil
    ) {
        self.store = store
        let immediate = store as? InMemoryStore
        self.immediate = immediate
        self.current = Mutex(catalogue)
        self.ruleWaits = Atomic(catalogue.waitsByDefault)
        self.profiles = profiles ?? { id, catalogue in catalogue.account(id: id) ?? AccountProfile(id: id) }
        self.observer = observer
        self.waitRoom = waiting.map { WaitRoom(timer: $0.timer, clock: $0.clock, capacity: $0.maxWaiting) }
    }

    /// Calls waiting for room now (`maxWait`).
    public var waitingCalls: Int { waitRoom?.count ?? 0 }

    /// Calls waiting for room now, by account (the dashboard's "who is waiting").
    public var waitingByAccount: [String: Int] { waitRoom?.waitingByAccount() ?? [:] }

    /// Whether `acquire` and `settle` answer `Pending.ready` (the store is in this
    /// process's memory).
    public var answersAtOnce: Bool { immediate != nil }

    /// The catalogue calls are resolved against now.
    public var catalogue: Catalogue {
        current.withLock { $0 }
    }

    /// Replaces the catalogue; the next call is resolved against `catalogue`.
    public func replaceCatalogue(_ catalogue: Catalogue) {
        current.withLock { $0 = catalogue }
        ruleWaits.store(catalogue.waitsByDefault, ordering: .relaxed)
    }

    /// Whether a rule of the current catalogue makes its calls wait by default
    /// (`Rule.maxWait`): one atomic read, for callers that prepare for waiting only
    /// when a call may wait.
    public var rulesWait: Bool { ruleWaits.load(ordering: .relaxed) }

    /// The profile of `account` under the current catalogue.
    public func profile(account: String) -> AccountProfile {
        profiles(account, catalogue)
    }

    // MARK: - Resolve

    /// The rule, tier, key and limits of a call of `account` on (`api`, `model`), under
    /// the current catalogue.
    ///
    /// - Throws: `ResolutionError` when the catalogue does not serve (API, model) for
    ///   the account.
    public func resolve(account: String, api: String, model: String) throws(ResolutionError) -> Resolution {
        let catalogue = self.catalogue
        return try catalogue.resolve(account: profiles(account, catalogue), api: api, model: model)
    }

    // MARK: - Decide

    /// Decides one call of a resolved (account, API, model), and tells the observer.
    ///
    /// - Parameters:
    ///   - units: the call's estimated cost on the rule's meter (tokens, characters, images).
    ///   - leaseTTL: nanoseconds; pass one to get a lease to settle (and, where the rule
    ///     limits concurrency, to hold a slot until then).
    ///   - model: the model the call named (for the observer's labels).
    /// - Returns: the decision or the store's error (`StoreError`): `.ready` when
    ///   `answersAtOnce`, else `.later` (the store is asked when the wait starts).
    public func acquire(
        _ resolution: Resolution, units: UInt64, leaseTTL: UInt64?, model: String
    ) -> Pending<Result<LimitedDecision, any Error>> {
        let request = AdmissionRequest(key: resolution.key, limits: resolution.limits, units: units, leaseTTL: leaseTTL)
        switch decideOnce(request) {
        case .ready(let result):
            // In memory: observed and answered here, with no closure made for it.
            return .ready(result.map { observed($0, resolution, units: units, model: model) })
        case .later(let wait):
            return .later { [self] completion in
                wait { completion($0.map { self.observed($0, resolution, units: units, model: model) }) }
            }
        }
    }

    /// Decides one call that may wait up to `maxWait` nanoseconds for room instead of
    /// being refused (`WaitRoom`: first come first served per key, woken at the exact
    /// retry time, never admitting beyond the limits).
    ///
    /// A call refused on requests or tokens whose retry time falls within `maxWait`, or
    /// on concurrency, waits; any other refusal, and any call when waiting is not set up
    /// or `maxWait` is 0, is answered as `acquire(_:units:leaseTTL:model:)` answers. A
    /// call of a key on which calls already wait queues behind them (refused at once if
    /// the first of them is woken after this call's bound). The observer is told of the
    /// answer once, and of how the wait ended (`waited`).
    ///
    /// - Parameter cancellation: lets the caller give up (the client went away): the
    ///   answer is then `WaitCancelled`, and nothing stays held.
    /// - Returns: `.ready` when answered at once, else `.later`.
    public func acquire(
        _ resolution: Resolution, units: UInt64, leaseTTL: UInt64?, model: String, maxWait: UInt64,
        cancellation: WaitCancellation? = nil
    ) -> Pending<Result<LimitedDecision, any Error>> {
        guard maxWait > 0, let room = waitRoom else {
            return acquire(resolution, units: units, leaseTTL: leaseTTL, model: model)
        }
        // Each attempt builds its request from the resolution: a waiting call keeps one
        // copy of the key and limits, not two.
        let attempt: WaitRoom.Attempt = { [self] in
            let request = AdmissionRequest(key: resolution.key, limits: resolution.limits, units: units, leaseTTL: leaseTTL)
            return decideOnce(request).map { $0.map { LimitedDecision(decision: $0, resolution: resolution, units: units, model: model) } }
        }
        let started = room.clock.now()
        let deadline = started.addingSaturating(maxWait)
        let answered: @Sendable (Result<LimitedDecision, any Error>, WaitOutcome, _ completion: @Sendable (Result<LimitedDecision, any Error>) -> Void) -> Void = {
            [self] result, outcome, completion in
            if outcome == .cancelled {
                // Admitted for a caller that has gone: its lease (a slot, a reservation)
                // is settled at once, like any other, so the next in line may wake.
                if case .success(let admitted) = result, let lease = admitted.decision.lease,
                    case .later(let wait) = settle(lease.id, actualUnits: 0)
                {
                    wait { _ in }
                }
                observer?.waited(outcome, nanoseconds: room.clock.now() &- started)
                completion(.failure(WaitCancelled()))
                return
            }
            if case .success(let limited) = result { observer?.decided(limited) }
            observer?.waited(outcome, nanoseconds: room.clock.now() &- started)
            completion(result)
        }
        if room.hasQueue(for: resolution.key) {
            return .later { completion in
                let queued = room.join(
                    key: resolution.key, deadline: deadline, attempt: attempt, cancellation: cancellation,
                    refusal: { denial, retryAfter in
                        var decision = denial
                        decision.retryAfter = retryAfter
                        decision.lease = nil
                        return LimitedDecision(decision: decision, resolution: resolution, units: units, model: model)
                    },
                    answer: { result, outcome in answered(result, outcome, completion) })
                if !queued {
                    // The queue emptied meanwhile: decided as a first caller.
                    switch self.acquire(resolution, units: units, leaseTTL: leaseTTL, model: model, maxWait: maxWait, cancellation: cancellation) {
                    case .ready(let result): completion(result)
                    case .later(let wait): wait(completion)
                    }
                }
            }
        }
        return attempt().flatMap { [self] result in
            guard case .success(let limited) = result, limited.isDenied, room.mayWait(limited, until: deadline) else {
                if case .success(let limited) = result { observer?.decided(limited) }
                return .ready(result)
            }
            return .later { completion in
                room.wait(
                    key: resolution.key, deadline: deadline, denial: limited, attempt: attempt, cancellation: cancellation,
                    answer: { result, outcome in answered(result, outcome, completion) })
            }
        }
    }

    /// The store's decision of `request`, not yet told to the observer: at once in
    /// memory, else later.
    private func decideOnce(_ request: AdmissionRequest) -> Pending<Result<Decision, any Error>> {
        // In memory, answered here; nothing is made for the other case first (a closure
        // for it would be an allocation per decision).
        if let immediate { return .ready(.success(immediate.acquire(request))) }
        return later { try await $0.acquire(request) }
    }

    /// What a store that suspends (Redis) answers to `body`, awaited in a task: the
    /// one way the limiter waits on its store.
    private func later<Value: Sendable>(
        _ body: @escaping @Sendable (any RateLimitStore) async throws -> Value
    ) -> Pending<Result<Value, any Error>> {
        .later { [store] completion in
            Task {
                do {
                    completion(.success(try await body(store)))
                } catch {
                    completion(.failure(error))
                }
            }
        }
    }

    /// `acquire(_:units:leaseTTL:model:)`, awaited.
    ///
    /// - Throws: the store's errors (`StoreError`).
    public func decide(_ resolution: Resolution, units: UInt64, leaseTTL: UInt64?, model: String) async throws -> LimitedDecision {
        try await acquire(resolution, units: units, leaseTTL: leaseTTL, model: model).value.get()
    }

    /// Resolves and decides one call of `account`.
    ///
    /// - Throws: `ResolutionError` when the catalogue does not serve (API, model) for the
    ///   account; the store's errors (`StoreError`) when it fails.
    public func acquire(
        account: String, api: String, model: String, units: UInt64, leaseTTL: UInt64?
    ) async throws -> LimitedDecision {
        try await decide(resolve(account: account, api: api, model: model), units: units, leaseTTL: leaseTTL, model: model)
    }

    private func observed(_ settled: SettledLease) -> SettledLease {
        observer?.settled(settled)
        // A slot freed or tokens given back: the calls waiting on the key may fit now.
        waitRoom?.roomMayHaveCome(on: settled.settlement.key)
        return settled
    }

    private func observed(_ decision: Decision, _ resolution: Resolution, units: UInt64, model: String) -> LimitedDecision {
        let limited = LimitedDecision(decision: decision, resolution: resolution, units: units, model: model)
        observer?.decided(limited)
        return limited
    }

    // MARK: - Settle

    /// Settles `lease` with the units the call actually used and frees its slot.
    ///
    /// - Returns: the settlement, a `LeaseError` (unknown, settled or expired lease) or
    ///   the store's error: `.ready` when `answersAtOnce`, else `.later`.
    public func settle(_ lease: LeaseID, actualUnits: UInt64) -> Pending<Result<SettledLease, any Error>> {
        if let immediate {
            return .ready(Result { observed(SettledLease(settlement: try immediate.settle(lease, actualUnits: actualUnits))) })
        }
        return later { try await $0.settle(lease, actualUnits: actualUnits) }.map { [self] settled in
            settled.map { observed(SettledLease(settlement: $0)) }
        }
    }

    /// `settle(_:actualUnits:)`, awaited.
    ///
    /// - Throws: `LeaseError` for unknown, settled or expired leases; the store's errors.
    public func settled(_ lease: LeaseID, actualUnits: UInt64) async throws -> SettledLease {
        try await settle(lease, actualUnits: actualUnits).value.get()
    }

    // MARK: - Usage after the fact

    /// Adds `units` to the tokens dimension of `resolution`'s key after the call (Envoy's
    /// usage reports), without counting a request. Not a decision: the observer is told
    /// of the settlement only.
    ///
    /// Done as a zero-unit admission on the tokens limit alone whose lease is settled at
    /// once with `units`: the settlement records them even beyond the limit, as
    /// `settle` does. When the tokens dimension is already over its limit, the admission
    /// is refused and the units are not added: every call of the key is refused on
    /// tokens until the window has moved on, so only calls already in flight go uncounted.
    ///
    /// - Returns: the report (`.ready` when `answersAtOnce`, else `.later`), or a
    ///   `LeaseError` if the store lost the instant lease, or the store's error.
    public func reportUsage(_ resolution: Resolution, units: UInt64) -> Pending<Result<UsageReport, any Error>> {
        guard let tokens = resolution.limits.tokens, units > 0 else { return .ready(.success(UsageReport(tokens: nil, charged: 0))) }
        let request = AdmissionRequest(
            key: resolution.key, limits: LimitSet(tokens: tokens, shadow: resolution.limits.shadow), units: 0,
            leaseTTL: Nanoseconds.perSecond)
        return decideOnce(request).flatMap { [self] decided in
            let decision: Decision
            do { decision = try decided.get() } catch { return .ready(.failure(error)) }
            guard let lease = decision.lease else { return .ready(.success(UsageReport(tokens: decision.limits.tokens, charged: 0))) }
            return settle(lease.id, actualUnits: units).map { settled in
                settled.map { UsageReport(tokens: $0.settlement.limits.tokens, charged: $0.settlement.charged) }
            }
        }
    }
}

/// What a usage report (`Limiter.reportUsage`) came to.
public struct UsageReport: Sendable {
    /// The tokens dimension after the report; nil when the rule has no tokens limit or
    /// nothing was reported.
    public var tokens: DimensionStatus?
    /// The units added (0 when refused or nothing was reported).
    public var charged: UInt64
}

/// Told of every decision the `Limiter` takes and every lease it settles, once each, on
/// the deciding thread (an event loop with the in-memory store): metrics, refusal
/// histories, audit. Must not block beyond a short lock.
public protocol DecisionObserver: Sendable {
    func decided(_ decision: LimitedDecision)
    /// A lease was settled (a call's end, or a usage report's instant lease).
    func settled(_ lease: SettledLease)
    /// A call that waited for room was answered (`decided` told its answer), after
    /// `nanoseconds` of waiting.
    func waited(_ outcome: WaitOutcome, nanoseconds: UInt64)
}

extension DecisionObserver {
    public func settled(_ lease: SettledLease) {}
    public func waited(_ outcome: WaitOutcome, nanoseconds: UInt64) {}
}

/// How a `Limiter` lets calls wait for room (`maxWait`).
public struct WaitSettings: Sendable {
    /// What wakes a waiting call at its retry time.
    public var timer: any WaitTimer
    /// The clock deadlines are read on: the store's (nanoseconds).
    public var clock: any NanosecondClock
    /// The most calls waiting at once; beyond it a call is refused at once.
    public var maxWaiting: Int

    public init(timer: any WaitTimer, clock: any NanosecondClock, maxWaiting: Int = 10_000) {
        self.timer = timer
        self.clock = clock
        self.maxWaiting = maxWaiting
    }
}
