#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A source of time in integer nanoseconds.
///
/// Every time-dependent operation in Weir reads time from a clock and also has
/// an `at:` variant that takes the time explicitly, so algorithms stay pure and
/// tests never sleep.
///
/// - Units: nanoseconds since an arbitrary, fixed origin. Only differences matter.
/// - Concurrency: implementations are thread-safe; `now()` never suspends.
/// - Monotonicity: not required. The algorithms tolerate a clock that jumps
///   backwards and never admit extra because of it.
public protocol NanosecondClock: Sendable {
    /// The current time, in nanoseconds.
    func now() -> UInt64
}

/// The machine's monotonic clock (`CLOCK_MONOTONIC`), in nanoseconds since boot.
///
/// Monotonic, so wall-clock adjustments (NTP steps, an operator changing the
/// date) never shift a window. Costs one vDSO call (about 20 ns).
public struct SystemClock: NanosecondClock {
    public init() {}

    @inlinable
    public func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) &* 1_000_000_000 &+ UInt64(spec.tv_nsec)
    }
}

/// A clock that moves only when told to: for tests and simulations.
///
/// Thread-safe (an atomic); it can be moved backwards to test clock jumps.
public final class ManualClock: NanosecondClock {
    private let nanoseconds: Atomic<UInt64>

    /// Creates a clock reading `start` nanoseconds.
    public init(start: UInt64 = 0) {
        self.nanoseconds = Atomic(start)
    }

    public func now() -> UInt64 {
        nanoseconds.load(ordering: .acquiring)
    }

    /// Moves the clock forward by `delta` nanoseconds.
    public func advance(by delta: UInt64) {
        nanoseconds.add(delta, ordering: .acquiringAndReleasing)
    }

    /// Sets the clock to `time` nanoseconds, forwards or backwards.
    public func set(to time: UInt64) {
        nanoseconds.store(time, ordering: .releasing)
    }
}

/// Nanosecond conversions used across Weir.
public enum Nanoseconds {
    public static let perMillisecond: UInt64 = 1_000_000
    public static let perSecond: UInt64 = 1_000_000_000

    /// Whole milliseconds in `ns`, rounded up (a retry hint must never be early).
    @inlinable
    public static func millisecondsRoundedUp(_ ns: UInt64) -> UInt64 {
        ns / perMillisecond + (ns % perMillisecond == 0 ? 0 : 1)
    }

    /// Whole seconds in `ns`, rounded up (for `Retry-After`).
    @inlinable
    public static func secondsRoundedUp(_ ns: UInt64) -> UInt64 {
        ns / perSecond + (ns % perSecond == 0 ? 0 : 1)
    }
}
