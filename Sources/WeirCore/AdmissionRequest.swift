/// One call asking to be admitted.
public struct AdmissionRequest: Sendable, Hashable {
    /// Whose budget, and which.
    public var key: LimitKey
    /// The limits the call is checked against.
    public var limits: LimitSet
    /// The call's cost on the tokens dimension (the estimate, in the rule's meter units).
    public var units: UInt64
    /// Time-to-live of the lease, in nanoseconds, or nil for a call that takes no lease.
    ///
    /// A call with a lease can be settled later and, where the rule limits concurrency,
    /// holds a slot until then. A call without one is instantaneous: its concurrency
    /// cost is zero, so it never waits for a slot and never holds one.
    public var leaseTTL: UInt64?

    public init(key: LimitKey, limits: LimitSet, units: UInt64 = 0, leaseTTL: UInt64? = nil) {
        self.key = key
        self.limits = limits
        self.units = units
        self.leaseTTL = leaseTTL
    }

    /// Default lease TTL: 5 minutes.
    public static let defaultLeaseTTL: UInt64 = 300 * Nanoseconds.perSecond
}

/// The result of settling a lease: the statuses after the settlement.
public struct Settlement: Sendable, Hashable {
    public var key: LimitKey
    /// Units charged on top of the reservation (actual above the estimate).
    public var charged: UInt64
    /// Units given back (actual below the estimate, while the reservation still counted).
    public var refunded: UInt64
    public var limits: LimitStatuses
    /// The limits the lease was taken under (windows and algorithms, for headers).
    public var limitSet: LimitSet

    public init(key: LimitKey, charged: UInt64, refunded: UInt64, limits: LimitStatuses, limitSet: LimitSet) {
        self.key = key
        self.charged = charged
        self.refunded = refunded
        self.limits = limits
        self.limitSet = limitSet
    }
}
