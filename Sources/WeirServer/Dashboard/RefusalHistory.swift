#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import WeirCore

/// How many calls were refused, per account, per reason, in each of the last 30
/// minutes: what the dashboard's refusals chart and the usage stream show.
///
/// **Recording** (`record(account:reason:)`) is called on the decision path for
/// denials only (an allowed call costs nothing here). It picks one of 16 lock stripes
/// by a cheap FNV-1a of the account, looks the account up once, and bumps one counter
/// in flat arrays: no allocation once the account is tracked, no suspension, no logging.
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
/// stripes, `capacity / 16` each, at least 1). When a stripe is full, the quarter of
/// its accounts whose latest refusal is oldest are forgotten at once (so the sort this
/// takes is paid once per quarter-stripe of new accounts, not per refusal) and their
/// storage reused. An account costs about 0.7 KB (30 stamps and 30 x 4 counters) plus
/// its id; storage grows with the accounts refused, up to the capacity.
///
/// Part of the engine rather than the server so that every front end (decision API,
/// gateway, Envoy service) can record into one history, and `weir-bench` can measure it.
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
    /// True when `clock` is the `SystemClock`: then minutes are read from
    /// `CLOCK_MONOTONIC_COARSE` (the same time base, a few milliseconds coarse, which a
    /// minute bucket cannot tell apart) at a fraction of a precise read's cost.
    private let coarse: Bool
    private let stripes: [Stripe]
    /// Accounts tracked per stripe at most.
    private let stripeCapacity: Int

    /// - Parameters:
    ///   - clock: where minutes are read; the server's clock (a `ManualClock` in tests).
    ///   - capacity: most accounts tracked at once (rounded to a multiple of 16, at
    ///     least 16). Default 4096: about 3 MB at most.
    public init(clock: any NanosecondClock, capacity: Int = 4096) {
        self.clock = clock
        self.coarse = clock is SystemClock
        self.stripeCapacity = max(1, capacity / Self.stripeCount)
        self.stripes = (0..<Self.stripeCount).map { _ in Stripe() }
    }

    /// Most accounts tracked at once.
    public var capacity: Int { stripeCapacity * Self.stripeCount }

    /// Counts one refusal of `account` for `reason` at the clock's time.
    public func record(account: String, reason: DenialReason) {
        record(account: account, reason: reason, at: now())
    }

    /// Counts one refusal of `account` for `reason` at `now` (nanoseconds on the clock).
    public func record(account: String, reason: DenialReason, at now: UInt64) {
        let minute = now / Self.minuteLength
        let capacity = stripeCapacity
        stripe(for: account).state.withLock { state in
            let ring = state.ring(for: account, capacity: capacity)
            state.add(reason, minute: minute, ring: ring)
        }
    }

    /// The series of one account at the clock's time; nil when it had no refusal in the window.
    public func series(account: String) -> Series? {
        series(account: account, at: now())
    }

    /// The series of one account at `now`; nil when it had no refusal in the window.
    public func series(account: String, at now: UInt64) -> Series? {
        let minute = now / Self.minuteLength
        return stripe(for: account).state.withLock { state in
            state.rings[account].flatMap { state.series(account, ring: $0, minute: minute) }
        }
    }

    /// Every account refused in the window ending at the clock's time, keyed by account.
    public func all() -> [String: Series] {
        all(at: now())
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
                    if let series = state.series(account, ring: ring, minute: minute) {
                        result[account] = series
                    } else if state.latest[ring] + UInt64(Self.minutes) <= minute {
                        stale.append(account)
                    }
                }
                for account in stale { state.forget(account) }
            }
        }
        return result
    }

    /// How many accounts are tracked now (including ones not yet forgotten).
    public var trackedAccounts: Int {
        stripes.reduce(0) { count, stripe in count + stripe.state.withLock { $0.rings.count } }
    }

    private func now() -> UInt64 {
        #if os(Linux)
        if coarse {
            var spec = timespec()
            clock_gettime(CLOCK_MONOTONIC_COARSE, &spec)
            return UInt64(spec.tv_sec) &* Nanoseconds.perSecond &+ UInt64(spec.tv_nsec)
        }
        #endif
        return clock.now()
    }

    /// The stripe of `account`: FNV-1a of its bytes (cheaper than SipHash; the stripe's
    /// dictionary does its own, seeded hashing).
    private func stripe(for account: String) -> Stripe {
        var hash: UInt32 = 2_166_136_261
        for byte in account.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        return stripes[Int(hash >> 7) & (Self.stripeCount - 1)]
    }
}

/// One lock stripe of a `RefusalHistory`.
private final class Stripe: Sendable {
    let state = Mutex(StripeState())
}

/// The accounts of one stripe, their rings stored flat: ring `r` owns minute slots
/// `r * minutes ..< (r + 1) * minutes` of `stamps`, and 4 counters per slot in `counts`.
private struct StripeState {
    static let minutes = RefusalHistory.minutes
    static let reasons = 4

    /// Account -> ring.
    var rings: [String: Int] = [:]
    /// Per ring, the latest minute recorded.
    var latest: [UInt64] = []
    /// Per ring and slot, the minute the slot counts; `UInt64.max` for a slot never used.
    var stamps: [UInt64] = []
    /// Per ring, slot and reason, refusals.
    var counts: [UInt32] = []
    /// Rings of forgotten accounts, to reuse.
    var free: [Int] = []

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

    /// The ring of `account`, making room (and one) if it has none.
    mutating func ring(for account: String, capacity: Int) -> Int {
        if let ring = rings[account] { return ring }
        if rings.count >= capacity {
            let oldest = rings.map { ($0.key, latest[$0.value]) }.sorted { $0.1 < $1.1 }
            for (id, _) in oldest.prefix(max(1, capacity / 4)) { forget(id) }
        }
        let ring: Int
        if let reused = free.popLast() {
            ring = reused
            for slot in ring * Self.minutes..<(ring + 1) * Self.minutes { stamps[slot] = .max }
        } else {
            ring = latest.count
            latest.append(0)
            stamps.append(contentsOf: repeatElement(.max, count: Self.minutes))
            counts.append(contentsOf: repeatElement(0, count: Self.minutes * Self.reasons))
        }
        latest[ring] = 0
        rings[account] = ring
        return ring
    }

    mutating func forget(_ account: String) {
        guard let ring = rings.removeValue(forKey: account) else { return }
        free.append(ring)
    }

    mutating func add(_ reason: DenialReason, minute: UInt64, ring: Int) {
        let slot = ring * Self.minutes + Int(minute % UInt64(Self.minutes))
        let stamp = stamps[slot]
        if stamp != minute {
            // A stamp from a later minute (the clock went back a whole ring): drop.
            if stamp != .max && stamp > minute { return }
            stamps[slot] = minute
            for index in slot * Self.reasons..<(slot + 1) * Self.reasons { counts[index] = 0 }
        }
        let index = slot * Self.reasons + Self.index(reason)
        if counts[index] < .max { counts[index] += 1 }
        if minute > latest[ring] { latest[ring] = minute }
    }

    /// The series of `ring` for the window ending at `minute`; nil when it is all zeros.
    func series(_ account: String, ring: Int, minute: UInt64) -> RefusalHistory.Series? {
        var result: [DenialReason: [UInt32]] = [:]
        for reason in DenialReason.allCases {
            var series = [UInt32](repeating: 0, count: Self.minutes)
            var any = false
            for offset in 0..<Self.minutes {
                // offset 0 is the oldest minute of the window.
                let back = UInt64(Self.minutes - 1 - offset)
                guard minute >= back else { continue }
                let wanted = minute - back
                let slot = ring * Self.minutes + Int(wanted % UInt64(Self.minutes))
                guard stamps[slot] == wanted else { continue }
                let count = counts[slot * Self.reasons + Self.index(reason)]
                if count > 0 { series[offset] = count; any = true }
            }
            if any { result[reason] = series }
        }
        return result.isEmpty ? nil : RefusalHistory.Series(account: account, counts: result)
    }
}
