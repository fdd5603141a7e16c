/// The GCRA part of a key's state: all an idle GCRA key stores (16 bytes).
struct KeyBuckets {
    /// GCRA TAT of the requests dimension; 0 (or any time at or before now) is full.
    var requestsTAT: UInt64 = 0
    /// GCRA TAT of the tokens dimension.
    var tokensTAT: UInt64 = 0
}

/// The state of one `LimitKey` in the in-memory store, and the admission and
/// settlement rules over it. Pure: the caller holds the lock and supplies the time.
///
/// Assembled for one operation from what the shard stores: the key's `KeyBuckets`
/// (GCRA TATs, inline in the shard's table) and, only for keys that use them, its
/// `KeyExtras` (sliding-window logs and concurrency slots, in a second table). An
/// idle GCRA key therefore costs its key and 16 bytes. If a reload switches a
/// dimension's algorithm, the other algorithm's state is ignored.
struct KeyState {
    var buckets: KeyBuckets
    /// Sliding-window logs and held slots, when the key has any.
    var extras: KeyExtras?

    var requestsTAT: UInt64 {
        get { buckets.requestsTAT }
        set { buckets.requestsTAT = newValue }
    }

    var tokensTAT: UInt64 {
        get { buckets.tokensTAT }
        set { buckets.tokensTAT = newValue }
    }

    init(buckets: KeyBuckets = KeyBuckets(), extras: KeyExtras? = nil) {
        self.buckets = buckets
        self.extras = extras
    }

    /// Whether operations under `limits` need the key's extras (a sliding-window
    /// dimension, or a concurrency limit).
    static func needsExtras(_ limits: LimitSet) -> Bool {
        limits.concurrency != nil || limits.requests?.algorithm == .slidingWindow
            || limits.tokens?.algorithm == .slidingWindow
    }

    /// One concurrency slot held by a lease.
    struct Slot {
        var lease: LeaseID
        var expiresAt: UInt64
    }

    /// What admission recorded, for the lease record.
    struct Admission {
        var decision: Decision
        /// The time the tokens reservation was logged at (sliding window), for refunds.
        var tokensLoggedAt: UInt64
        /// Whether the call consumed (false for a shadowed denial).
        var consumed: Bool
    }

    private mutating func extrasForUpdate() -> KeyExtras {
        if let extras { return extras }
        let created = KeyExtras()
        extras = created
        return created
    }

    /// One time-window dimension's verdict: fits, or how long until it does.
    private struct Verdict {
        var fits: Bool
        var wait: UInt64
        /// GCRA: the TAT to store if the call is admitted.
        var tat: UInt64 = 0
    }

    /// Checks `cost` against one time-window dimension without consuming.
    @inline(__always)
    private mutating func check(
        _ dimension: Dimension, cost: UInt64, limit: Limit, now: UInt64
    ) -> Verdict {
        switch limit.algorithm {
        case .gcra:
            let tat = dimension == .requests ? requestsTAT : tokensTAT
            let step = GCRA.admit(cost: cost, tat: tat, now: now, limit: limit)
            return Verdict(fits: step.admitted, wait: step.retryAfter, tat: step.tat)
        case .slidingWindow:
            guard let extras else { return Verdict(fits: true, wait: 0) }
            return extras.withLog(dimension) { log in
                let effective = log.effectiveTime(now)
                log.prune(now: effective, window: limit.window)
                let wait = log.wait(cost: cost, limit: limit.limit, window: limit.window, now: effective)
                return Verdict(fits: wait == 0, wait: wait == 0 ? 0 : wait + (effective - now))
            }
        }
    }

    /// Consumes `cost` on one time-window dimension as `verdict` allowed; returns the
    /// time it was logged at.
    @inline(__always)
    private mutating func consume(
        _ dimension: Dimension, cost: UInt64, limit: Limit, verdict: Verdict, now: UInt64
    ) -> UInt64 {
        switch limit.algorithm {
        case .gcra:
            if dimension == .requests { requestsTAT = verdict.tat } else { tokensTAT = verdict.tat }
            return now
        case .slidingWindow:
            if cost == 0 { return now }
            let extras = extrasForUpdate()
            extras.rememberWindow(limit.window, of: dimension)
            return extras.withLog(dimension) { log in
                let effective = log.effectiveTime(now)
                log.append(cost: cost, at: effective)
                return effective
            }
        }
    }

    /// Frees the slots whose leases reached their TTL at `now`.
    private mutating func expireSlots(now: UInt64) {
        guard let extras, !extras.slots.isEmpty else { return }
        extras.slots.removeAll { $0.expiresAt <= now }
    }

    /// Decides one call at `now` and, when it is allowed for real, consumes from every
    /// dimension. All or nothing: a denial leaves the state untouched.
    ///
    /// - Parameter lease: the identity to give the lease, when the call asked for one.
    @inline(__always)
    mutating func admit(_ request: AdmissionRequest, now: UInt64, lease: LeaseID?) -> Admission {
        let limits = request.limits
        let holdsSlot = lease != nil && limits.concurrency != nil
        var reason: DenialReason?
        var retryAfter: UInt64?
        var requestsVerdict = Verdict(fits: true, wait: 0)
        var tokensVerdict = Verdict(fits: true, wait: 0)

        if let tokens = limits.tokens, request.units > tokens.capacity {
            reason = .tooLarge
        } else {
            var concurrencyFits = true
            if let requests = limits.requests {
                requestsVerdict = check(.requests, cost: 1, limit: requests, now: now)
            }
            if let tokens = limits.tokens {
                tokensVerdict = check(.tokens, cost: request.units, limit: tokens, now: now)
            }
            if holdsSlot, let concurrency = limits.concurrency {
                expireSlots(now: now)
                concurrencyFits = UInt64(extras?.slots.count ?? 0) < concurrency.limit
            }
            if !requestsVerdict.fits {
                reason = .requests
            } else if !tokensVerdict.fits {
                reason = .tokens
            } else if !concurrencyFits {
                reason = .concurrency
            }
            if !requestsVerdict.fits || !tokensVerdict.fits {
                retryAfter = max(requestsVerdict.wait, tokensVerdict.wait)
            }
        }

        let admitted = reason == nil
        var tokensLoggedAt = now
        if admitted {
            if let requests = limits.requests {
                _ = consume(.requests, cost: 1, limit: requests, verdict: requestsVerdict, now: now)
            }
            if let tokens = limits.tokens {
                tokensLoggedAt = consume(.tokens, cost: request.units, limit: tokens, verdict: tokensVerdict, now: now)
            }
            if holdsSlot, let lease, let ttl = request.leaseTTL {
                extrasForUpdate().slots.append(Slot(lease: lease, expiresAt: now.addingSaturating(ttl)))
            }
        }

        let allowed = admitted || limits.shadow
        var issued: Lease?
        if allowed, let lease, let ttl = request.leaseTTL {
            issued = Lease(
                id: lease,
                reservedUnits: admitted ? request.units : 0,
                holdsSlot: admitted && holdsSlot,
                expiresAt: now.addingSaturating(ttl)
            )
        }
        let decision = Decision(
            isAllowed: allowed,
            reason: reason,
            retryAfter: retryAfter,
            isShadowed: !admitted && limits.shadow,
            limits: statuses(limits, now: now),
            lease: issued
        )
        return Admission(decision: decision, tokensLoggedAt: tokensLoggedAt, consumed: admitted)
    }

    /// Replaces a lease's reservation with the actual units and frees its slot.
    ///
    /// A refund takes back from the reservation while it still counts (a sliding-window
    /// entry that has left the window, or GCRA time already elapsed, is not given back).
    /// An extra charge is recorded at `now`, when the usage became known.
    mutating func settle(
        lease: LeaseID, reserved: UInt64, actual: UInt64, tokensLoggedAt: UInt64,
        limits: LimitSet, now: UInt64
    ) -> (charged: UInt64, refunded: UInt64) {
        var charged: UInt64 = 0
        var refunded: UInt64 = 0
        if let tokens = limits.tokens {
            if actual > reserved {
                charged = actual - reserved
                switch tokens.algorithm {
                case .gcra:
                    tokensTAT = GCRA.charge(units: charged, tat: tokensTAT, now: now, limit: tokens)
                case .slidingWindow:
                    let extras = extrasForUpdate()
                    extras.rememberWindow(tokens.window, of: .tokens)
                    extras.withLog(.tokens) { log in
                        let effective = log.effectiveTime(now)
                        log.prune(now: effective, window: tokens.window)
                        log.append(cost: charged, at: effective)
                    }
                }
            } else if actual < reserved {
                let credit = reserved - actual
                switch tokens.algorithm {
                case .gcra:
                    let before = tokensTAT
                    tokensTAT = GCRA.refund(units: credit, tat: tokensTAT, now: now, limit: tokens)
                    refunded = before == tokensTAT ? 0 : min(credit, WideArithmetic.multiplyDivideFloor(
                        before - tokensTAT, tokens.limit, tokens.window))
                case .slidingWindow:
                    if let extras {
                        refunded = extras.withLog(.tokens) { log in
                            log.prune(now: log.effectiveTime(now), window: tokens.window)
                            return log.refund(cost: credit, admittedAt: tokensLoggedAt)
                        }
                    }
                }
            }
        }
        if let extras, !extras.slots.isEmpty {
            extras.slots.removeAll { $0.lease == lease }
        }
        return (charged, refunded)
    }

    /// The statuses of every limited dimension at `now`, without consuming.
    @inline(__always)
    mutating func statuses(_ limits: LimitSet, now: UInt64) -> LimitStatuses {
        var result = LimitStatuses()
        if let requests = limits.requests {
            result.requests = status(.requests, limit: requests, now: now)
        }
        if let tokens = limits.tokens {
            result.tokens = status(.tokens, limit: tokens, now: now)
        }
        if let concurrency = limits.concurrency {
            expireSlots(now: now)
            result.concurrency = .concurrency(concurrency, held: UInt64(extras?.slots.count ?? 0))
        }
        return result
    }

    @inline(__always)
    private mutating func status(_ dimension: Dimension, limit: Limit, now: UInt64) -> DimensionStatus {
        switch limit.algorithm {
        case .gcra:
            return .gcra(limit, tat: dimension == .requests ? requestsTAT : tokensTAT, now: now)
        case .slidingWindow:
            guard let extras else {
                return DimensionStatus(limit: limit.limit, remaining: limit.limit, reset: 0)
            }
            return extras.withLog(dimension) { log in
                log.prune(now: log.effectiveTime(now), window: limit.window)
                return .slidingWindow(limit, used: log.used, reset: log.reset(window: limit.window, now: now))
            }
        }
    }

    /// Whether the key is fully replenished at `now` (and can be forgotten).
    /// Prunes logs and expired slots as a side effect of looking.
    mutating func isIdle(now: UInt64) -> Bool {
        guard requestsTAT <= now, tokensTAT <= now else { return false }
        guard let extras else { return true }
        extras.slots.removeAll { $0.expiresAt <= now }
        guard extras.slots.isEmpty else { return false }
        extras.requestsLog.prune(now: extras.requestsLog.effectiveTime(now), window: extras.requestsWindow)
        extras.tokensLog.prune(now: extras.tokensLog.effectiveTime(now), window: extras.tokensWindow)
        return extras.requestsLog.isEmpty && extras.tokensLog.isEmpty
    }
}

/// The parts of a key's state that not every key needs: sliding-window logs and held
/// concurrency slots, in the shard's second table.
///
/// A reference type, so assembling a `KeyState` costs one retain rather than copying
/// the logs. Only ever touched under the owning shard's lock, and `withLog` hands out
/// one log at a time, so accesses never overlap: the properties opt out of dynamic
/// exclusivity checking (`@exclusivity(unchecked)`), which cost about 250 instructions
/// per sliding-window decision when measured. A value type mutated in place through
/// the table was tried and cost more (value-witness copies): see BENCHMARKS.md.
final class KeyExtras {
    @exclusivity(unchecked) var requestsLog = SlidingWindowLog()
    @exclusivity(unchecked) var tokensLog = SlidingWindowLog()
    @exclusivity(unchecked) var slots: [KeyState.Slot] = []
    /// The windows the logs were last written with, so the sweeper can prune them.
    var requestsWindow: UInt64 = 0
    var tokensWindow: UInt64 = 0

    func rememberWindow(_ window: UInt64, of dimension: Dimension) {
        if dimension == .requests { requestsWindow = window } else { tokensWindow = window }
    }

    @inline(__always)
    func withLog<Result>(_ dimension: Dimension, _ body: (inout SlidingWindowLog) -> Result) -> Result {
        dimension == .requests ? body(&requestsLog) : body(&tokensLog)
    }
}
