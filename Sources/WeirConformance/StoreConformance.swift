import WeirCore

/// The checks every `RateLimitStore` must pass, independent of any test framework so
/// that each store's test target can run them (the in-memory store's tests now, the
/// Redis store's later).
///
/// Each `Check` gets a fresh store on a fresh `ManualClock` from the factory and throws
/// `ConformanceFailure` on the first violation. Run them all, e.g. with Swift Testing:
///
///     @Test(arguments: StoreConformance.checks)
///     func conforms(_ check: StoreConformance.Check) async throws {
///         try await check.run { clock in InMemoryStore(clock: clock) }
///     }
///
/// Time is only ever moved through the manual clock; nothing sleeps.
public enum StoreConformance {
    /// Makes a store that reads time from the given clock.
    public typealias Factory = @Sendable (ManualClock) async throws -> any RateLimitStore

    /// One named requirement.
    public struct Check: Sendable, CustomStringConvertible {
        public let name: String
        let body: @Sendable (ManualClock, any RateLimitStore) async throws -> Void

        public var description: String { name }

        /// Runs the check against a fresh store from `factory`.
        public func run(_ factory: Factory) async throws {
            let clock = ManualClock(start: 1_000 * Nanoseconds.perSecond)
            let store = try await factory(clock)
            try await body(clock, store)
        }
    }

    /// Every check, in a stable order.
    public static let checks: [Check] = [
        Check(name: "sliding window matches the reference model on random traces", body: slidingWindowMatchesModel),
        Check(name: "sliding window never admits more than the limit in any window", body: slidingWindowNeverOverAdmits),
        Check(name: "a denied call passes at exactly its retry time, not 1 ns before", body: retryIsExact),
        Check(name: "gcra admits at most burst + rate x T over any interval", body: gcraBound),
        Check(name: "gcra retry time is exact", body: gcraRetryIsExact),
        Check(name: "a denial on one dimension consumes from none", body: atomicAcrossDimensions),
        Check(name: "a cost that can never fit is too large, with no retry time", body: tooLarge),
        Check(name: "a raised limit helps at once, without resetting usage", body: raisedLimitHelpsAtOnce),
        Check(name: "concurrency slots are held by leases and freed by settle", body: concurrencySlots),
        Check(name: "an unsettled lease frees its slot at exactly its TTL", body: leaseExpiry),
        Check(name: "settle refunds an over-estimate", body: settleRefund),
        Check(name: "settle charges an under-estimate", body: settleExtraCharge),
        Check(name: "settling twice, late or unknown is an error", body: settleErrors),
        Check(name: "shadow mode allows, reports and consumes nothing", body: shadowMode),
        Check(name: "keys never share state", body: isolation),
        Check(name: "a clock that jumps backwards never admits extra", body: backwardsClock),
        Check(name: "64 concurrent callers on one key admit exactly the limit", body: concurrentCallers),
        Check(name: "statuses report limit, remaining and reset", body: statuses),
    ]
}

/// A violated requirement: what was expected, what happened, where.
public struct ConformanceFailure: Error, CustomStringConvertible {
    public let message: String
    public let line: Int

    public var description: String { "conformance failure (StoreConformance.swift:\(line)): \(message)" }
}

@inline(__always)
func require(_ condition: Bool, _ message: @autoclosure () -> String, line: Int = #line) throws {
    if !condition { throw ConformanceFailure(message: message(), line: line) }
}
