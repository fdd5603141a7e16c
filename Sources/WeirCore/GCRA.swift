/// The generic cell rate algorithm, cost-weighted, as pure arithmetic over integer
/// nanoseconds.
///
/// State is one timestamp, the theoretical arrival time (TAT): the moment the
/// bucket would be full again if nothing more were admitted. A TAT of 0, or any
/// TAT at or before now, is a full bucket.
///
/// Admission of `cost` at `now` (with `debt = max(tat, now) - now`) succeeds when
///
///     debt * limit + cost * window <= burst * window
///
/// evaluated exactly in 128 bits, and then moves the TAT forward by
/// `ceil(cost * window / limit)` nanoseconds (rounded up, so the bucket never
/// refills faster than the rate).
///
/// **Guarantee.** Over any interval of length T, the admitted cost is at most
/// `burst + limit * T / window`. A clock that jumps backwards only makes the
/// debt look larger, so it can delay admissions but never add any.
///
/// **Retry.** A denied cost fits at exactly `max(tat, now) - floor((burst - cost) * window / limit)`,
/// not one nanosecond earlier, if nothing else is admitted meanwhile.
public enum GCRA {
    /// The outcome of one admission attempt.
    public struct Step: Sendable, Equatable {
        /// Whether the cost fits now.
        public var admitted: Bool
        /// The TAT to store: moved forward when admitted, unchanged when denied.
        public var tat: UInt64
        /// When denied, nanoseconds from `now` until the cost fits; 0 when admitted.
        public var retryAfter: UInt64

        @inlinable
        public init(admitted: Bool, tat: UInt64, retryAfter: UInt64) {
            self.admitted = admitted
            self.tat = tat
            self.retryAfter = retryAfter
        }
    }

    /// Tries to admit `cost` units at `now` against `limit`. Pure.
    ///
    /// - Precondition: `cost <= limit.burst` (larger costs never fit; callers
    ///   answer them as too large before asking).
    @inlinable
    public static func admit(cost: UInt64, tat: UInt64, now: UInt64, limit: Limit) -> Step {
        let start = max(tat, now)
        let debt = start - now
        if WideArithmetic.productIsAtMost(debt, limit.limit, limit.burst - cost, limit.window) {
            let increment = WideArithmetic.multiplyDivideCeiling(cost, limit.window, limit.limit)
            return Step(admitted: true, tat: start.addingSaturating(increment), retryAfter: 0)
        }
        let slack = WideArithmetic.multiplyDivideFloor(limit.burst - cost, limit.window, limit.limit)
        let fitsAt = start - slack
        return Step(admitted: false, tat: tat, retryAfter: fitsAt - now)
    }

    /// Units that could be admitted at `now` in one call.
    @inlinable
    public static func remaining(tat: UInt64, now: UInt64, limit: Limit) -> UInt64 {
        guard tat > now else { return limit.burst }
        let used = WideArithmetic.multiplyDivideCeiling(tat - now, limit.limit, limit.window)
        return limit.burst.subtractingSaturating(used)
    }

    /// Nanoseconds from `now` until the bucket is full again.
    @inlinable
    public static func reset(tat: UInt64, now: UInt64) -> UInt64 {
        tat.subtractingSaturating(now)
    }

    /// The TAT after `units` already admitted turn out not to have been used.
    /// Never moves the TAT before `now`: time already passed is not given back.
    @inlinable
    public static func refund(units: UInt64, tat: UInt64, now: UInt64, limit: Limit) -> UInt64 {
        guard tat > now else { return tat }
        let credit = WideArithmetic.multiplyDivideFloor(units, limit.window, limit.limit)
        return max(tat.subtractingSaturating(credit), now)
    }

    /// The TAT after `units` more than admitted were used: the bucket goes into
    /// debt, and later calls wait it out.
    @inlinable
    public static func charge(units: UInt64, tat: UInt64, now: UInt64, limit: Limit) -> UInt64 {
        let increment = WideArithmetic.multiplyDivideCeiling(units, limit.window, limit.limit)
        return max(tat, now).addingSaturating(increment)
    }
}
