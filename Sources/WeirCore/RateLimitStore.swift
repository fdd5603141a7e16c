/// Where limiter state lives: in memory for one process, in Redis for many.
///
/// Every store must pass `StoreConformance` (target `WeirConformance`). Its requirements:
///
/// - **Atomic admission.** `acquire` checks every dimension of the request and either
///   consumes from all of them or from none, as one step with respect to every other
///   call on the same key (from any thread, task or, for shared stores, instance).
/// - **Semantics.** Decisions follow `GCRA` and `SlidingWindowLog` exactly: the same
///   timeline gives the same decisions, retry times and statuses in every store.
///   A denied call consumes nothing. A call whose units exceed the tokens limit's
///   capacity is `.tooLarge`, checked before anything else. Shadow-mode limit sets
///   allow every call, consume nothing for a denial and mark the decision shadowed.
/// - **Leases.** A request with a `leaseTTL` that is allowed gets a `Lease`; where the
///   limit set has a concurrency limit, the lease holds one slot until `settle` or its
///   TTL, whichever comes first. `settle` replaces the reservation with the actual
///   units (refund or extra charge) and frees the slot, exactly once: a second settle
///   throws `LeaseError.alreadySettled`, a lease past its TTL `LeaseError.expired`, an
///   id the store never issued `LeaseError.unknown`.
/// - **Isolation.** Keys never share state: one account's traffic never changes another's.
/// - **Time.** The store reads time from its own clock (a `NanosecondClock` given at
///   creation, or the backend's clock), never from the caller.
/// - **Failures.** Backend failures throw `StoreError`; a denial is never an error.
///
/// Concurrency: implementations are thread-safe and may be called from any task.
public protocol RateLimitStore: Sendable {
    /// Decides one call and, when allowed, consumes its costs and issues its lease.
    func acquire(_ request: AdmissionRequest) async throws -> Decision

    /// Settles a lease with the units actually used and frees its concurrency slot.
    ///
    /// - Throws: `LeaseError` for leases that cannot be settled; `StoreError` on backend failure.
    func settle(_ lease: LeaseID, actualUnits: UInt64) async throws -> Settlement

    /// The statuses of `key` under `limits` now, without consuming anything.
    func status(of key: LimitKey, limits: LimitSet) async throws -> LimitStatuses

    /// Checks that the backend answers, without reading or changing any limit: the
    /// health probe of `FailoverStore`. Returns within the store's command timeout.
    ///
    /// - Throws: `StoreError` when the backend cannot be reached. The default (a store in
    ///   this process's memory) never throws.
    func probe() async throws
}

extension RateLimitStore {
    /// An in-process store is always reachable.
    public func probe() async throws {}
}

/// A failure of the store's backend (never a denial, never a lease problem).
public struct StoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, for operators. Never contains API keys.
    public var message: String
    /// Whether retrying may succeed (a timeout, a lost connection) or not (a script error).
    public var isTransient: Bool

    public init(_ message: String, isTransient: Bool) {
        self.message = message
        self.isTransient = isTransient
    }

    public var description: String { message }
}
