/// Why a call was (or, in shadow mode, would have been) refused.
public enum DenialReason: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// The requests dimension has no room before the retry time.
    case requests
    /// The tokens dimension has no room before the retry time.
    case tokens
    /// Every concurrency slot is held.
    case concurrency
    /// The call's cost alone exceeds a limit: it can never pass, so there is no retry time.
    case tooLarge = "too_large"

    public var description: String { rawValue }
}

/// The state of one dimension as seen by one decision.
public struct DimensionStatus: Sendable, Hashable {
    /// The limit in force (units per window, or slots).
    public var limit: UInt64
    /// What a call could still take now, after this decision.
    public var remaining: UInt64
    /// Nanoseconds until the dimension is back to its full limit (0 for concurrency).
    public var reset: UInt64

    public init(limit: UInt64, remaining: UInt64, reset: UInt64) {
        self.limit = limit
        self.remaining = remaining
        self.reset = reset
    }

    /// A GCRA limit's status at `now`, given its theoretical arrival time. Every store
    /// computes a GCRA status here.
    @inlinable
    public static func gcra(_ limit: Limit, tat: UInt64, now: UInt64) -> DimensionStatus {
        DimensionStatus(
            limit: limit.limit, remaining: GCRA.remaining(tat: tat, now: now, limit: limit),
            reset: GCRA.reset(tat: tat, now: now))
    }

    /// A sliding-window limit's status, given the units its log counts (pruned at `now`)
    /// and the nanoseconds until the log is empty.
    @inlinable
    public static func slidingWindow(_ limit: Limit, used: UInt64, reset: UInt64) -> DimensionStatus {
        DimensionStatus(limit: limit.limit, remaining: limit.limit.subtractingSaturating(used), reset: reset)
    }

    /// A concurrency limit's status, given the slots held (expired ones freed).
    @inlinable
    public static func concurrency(_ limit: Limit, held: UInt64) -> DimensionStatus {
        DimensionStatus(limit: limit.limit, remaining: limit.limit.subtractingSaturating(held), reset: 0)
    }
}

/// The per-dimension statuses of a decision or a settlement. Stored properties,
/// not an array, so producing one never allocates.
public struct LimitStatuses: Sendable, Hashable {
    public var requests: DimensionStatus?
    public var tokens: DimensionStatus?
    public var concurrency: DimensionStatus?

    public init(requests: DimensionStatus? = nil, tokens: DimensionStatus? = nil, concurrency: DimensionStatus? = nil) {
        self.requests = requests
        self.tokens = tokens
        self.concurrency = concurrency
    }

    public subscript(dimension: Dimension) -> DimensionStatus? {
        switch dimension {
        case .requests: requests
        case .tokens: tokens
        case .concurrency: concurrency
        }
    }

    /// The present statuses in the order requests, tokens, concurrency.
    public var all: [(Dimension, DimensionStatus)] {
        Dimension.allCases.compactMap { dimension in self[dimension].map { (dimension, $0) } }
    }
}

/// The answer to one admission attempt. A denial is an outcome, not an error.
public struct Decision: Sendable, Hashable {
    /// Whether the caller may go ahead. Always true in shadow mode.
    public var isAllowed: Bool
    /// Why the call was refused, or would have been in shadow mode; nil when it fits.
    public var reason: DenialReason?
    /// Nanoseconds until the call would fit in every denying time-window dimension
    /// (the largest of their waits). Nil when it fits, when it is too large, and when
    /// only concurrency denies (a slot frees when another call ends, which no clock tells).
    public var retryAfter: UInt64?
    /// True when shadow mode turned a denial into an allowance. A shadowed call
    /// consumes nothing, so shadow decisions are exactly those enforcement would make.
    public var isShadowed: Bool
    /// Per dimension: limit, remaining and reset after this decision.
    public var limits: LimitStatuses
    /// The lease to settle, when the call asked for one and was allowed.
    public var lease: Lease?

    public init(
        isAllowed: Bool,
        reason: DenialReason? = nil,
        retryAfter: UInt64? = nil,
        isShadowed: Bool = false,
        limits: LimitStatuses = LimitStatuses(),
        lease: Lease? = nil
    ) {
        self.isAllowed = isAllowed
        self.reason = reason
        self.retryAfter = retryAfter
        self.isShadowed = isShadowed
        self.limits = limits
        self.lease = lease
    }
}
