import Synchronization
import WeirCore

/// How many calls were refused, per account, per reason, in each of the last 30
/// minutes: what the dashboard's refusals chart and the usage stream show.
///
/// **Recording** (`record(account:reason:)`) is called on the decision path for
/// denials only (an allowed call costs nothing here). It hashes the account, takes one
/// of 16 lock stripes, and bumps one counter in a fixed ring: no allocation once the
/// account is tracked, no suspension, no logging.
///
/// **Minutes.** Time is read from the injected clock and cut into whole minutes
/// (`minute = now / 60 s`). Each tracked account has a ring of 30 minute slots, each
/// stamped with the minute it counts; a slot whose stamp is older than the minute being
/// recorded is cleared before it is reused, so a count never leaks into a later minute.
/// A series read at minute M holds the minutes M-29 ... M, oldest first; minutes with
/// no refusal read 0. A clock moved backwards by more than the ring drops the records
/// made in the ring's "future" slots rather than counting them twice.
///
/// **Memory** is bounded: at most `capacity` accounts are tracked (spread over the
/// stripes, `capacity / 16` each, at least 1). When a stripe is full, a new account
/// takes the place of the one whose latest refusal is oldest. An account costs about
/// 0.7 KB (30 stamps and 30 x 4 counters) plus its id.
///
/// Concurrency: thread-safe; every method takes one stripe's `Mutex` at a time and
/// never suspends.
public final class RefusalHistory: Sendable {
    /// Minutes kept: the series of `counts(at:)` have this many entries.
    public static let minutes = 30
    /// Nanoseconds per minute bucket.
    public static let minuteLength: UInt64 = 60 * Nanoseconds.perSecond
    static let stripeCount = 16

    /// One account's refusals over the last `minutes` minutes.
    public struct Series: Sendable, Equatable {
        public var account: String
        /// Per reason that occurred, `minutes` counts, oldest minute first, the current
        /// minute last. Reasons with no refusal in the window are absent.
        public var counts: [DenialReason: [UInt32]]

        /// Every refusal in the window.
        public var total: UInt64 {
            counts.values.reduce(0) { sum, series in series.reduce(sum) { $0 + UInt64($1) } }
        }
    }

    private let clock: any NanosecondClock
    private let stripes: [Stripe]
    /// Accounts tracked per stripe at most.
    private let stripeCapacity: Int

    /// - Parameters:
    ///   - clock: where minutes are read; the server's clock (a `ManualClock` in tests).
    ///   - capacity: most accounts tracked at once (rounded to a multiple of 16, at
    ///     least 16). Default 4096: about 3 MB at most.
    public init(clock: any NanosecondClock, capacity: Int = 4096) {
        self.clock = clock
        self.stripeCapacity = max(1, capacity / Self.stripeCount)
        self.stripes = (0..<Self.stripeCount).map { _ in Stripe() }
    }

    /// Most accounts tracked at once.
    public var capacity: Int { stripeCapacity * Self.stripeCount }

    /// Counts one refusal of `account` for `reason` at the clock's time.
    public func record(account: String, reason: DenialReason) {
        record(account: account, reason: reason, at: clock.now())
    }

    /// Counts one refusal of `account` for `reason` at `now` (nanoseconds on the clock).
    public func record(account: String, reason: DenialReason, at now: UInt64) {
        let minute = now / Self.minuteLength
        let capacity = stripeCapacity
        stripe(for: account).state.withLock { state in
            if state.rings[account] == nil {
                if state.rings.count >= capacity, let oldest = state.rings.min(by: { $0.value.latest < $1.value.latest })?.key {
                    state.rings[oldest] = nil
                }
                state.rings[account] = Ring()
            }
            state.rings[account]!.add(reason, minute: minute)
        }
    }

    /// The series of one account at the clock's time; nil when it had no refusal in the window.
    public func series(account: String) -> Series? {
        series(account: account, at: clock.now())
    }

    /// The series of one account at `now`; nil when it had no refusal in the window.
    public func series(account: String, at now: UInt64) -> Series? {
        let minute = now / Self.minuteLength
        return stripe(for: account).state.withLock { state in
            state.rings[account].flatMap { Self.series(account, $0, minute: minute) }
        }
    }

    /// Every account refused in the window ending at the clock's time, keyed by account.
    public func all() -> [String: Series] {
        all(at: clock.now())
    }

    /// Every account refused in the window ending at `now`, keyed by account. Also
    /// forgets accounts whose last refusal has left the window.
    public func all(at now: UInt64) -> [String: Series] {
        let minute = now / Self.minuteLength
        var result: [String: Series] = [:]
        for stripe in stripes {
            stripe.state.withLock { state in
                var stale: [String] = []
                for (account, ring) in state.rings {
                    if let series = Self.series(account, ring, minute: minute) {
                        result[account] = series
                    } else if ring.latest + UInt64(Self.minutes) <= minute {
                        stale.append(account)
                    }
                }
                for account in stale { state.rings[account] = nil }
            }
        }
        return result
    }

    /// How many accounts are tracked now (including ones not yet forgotten).
    public var trackedAccounts: Int {
        stripes.reduce(0) { count, stripe in count + stripe.state.withLock { $0.rings.count } }
    }

    private func stripe(for account: String) -> Stripe {
        var hasher = Hasher()
        hasher.combine(account)
        return stripes[hasher.finalize() & (Self.stripeCount - 1)]
    }

    private static func series(_ account: String, _ ring: Ring, minute: UInt64) -> Series? {
        var counts: [DenialReason: [UInt32]] = [:]
        for reason in DenialReason.allCases {
            let reasonIndex = Ring.index(reason)
            var series = [UInt32](repeating: 0, count: minutes)
            var any = false
            for offset in 0..<minutes {
                // offset 0 is the oldest minute of the window.
                let back = UInt64(minutes - 1 - offset)
                guard minute >= back else { continue }
                let wanted = minute - back
                let slot = Int(wanted % UInt64(minutes))
                guard ring.stamps[slot] == wanted else { continue }
                let count = ring.counts[slot * Ring.reasons + reasonIndex]
                if count > 0 { series[offset] = count; any = true }
            }
            if any { counts[reason] = series }
        }
        return counts.isEmpty ? nil : Series(account: account, counts: counts)
    }
}

/// One lock stripe of a `RefusalHistory`.
private final class Stripe: Sendable {
    let state = Mutex(StripeState())
}

private struct StripeState {
    var rings: [String: Ring] = [:]
}

/// One account's ring of minute slots.
private struct Ring {
    static let reasons = DenialReason.allCases.count
    /// The minute each slot counts; `UInt64.max` for a slot never used.
    var stamps = [UInt64](repeating: .max, count: RefusalHistory.minutes)
    /// `slot * reasons + reason index` -> refusals.
    var counts = [UInt32](repeating: 0, count: RefusalHistory.minutes * Ring.reasons)
    /// The latest minute recorded.
    var latest: UInt64 = 0

    /// The reason's place among a slot's counters, in `DenialReason.allCases` order
    /// (a switch: `allCases` would allocate on the decision path).
    static func index(_ reason: DenialReason) -> Int {
        switch reason {
        case .requests: 0
        case .tokens: 1
        case .concurrency: 2
        case .tooLarge: 3
        }
    }

    mutating func add(_ reason: DenialReason, minute: UInt64) {
        let slot = Int(minute % UInt64(RefusalHistory.minutes))
        let stamp = stamps[slot]
        if stamp != minute {
            // A stamp from a later minute (the clock went back a whole ring): drop.
            if stamp != .max && stamp > minute { return }
            stamps[slot] = minute
            for index in slot * Ring.reasons..<(slot + 1) * Ring.reasons { counts[index] = 0 }
        }
        let index = slot * Ring.reasons + Ring.index(reason)
        counts[index] &+= counts[index] == .max ? 0 : 1
        latest = max(latest, minute)
    }
}
