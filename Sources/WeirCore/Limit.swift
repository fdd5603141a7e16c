/// What a limit counts.
public enum Dimension: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Calls: every admitted call costs 1.
    case requests
    /// The rule's meter units (tokens, characters, images): a call costs its `units`.
    case tokens
    /// Calls in flight: a call holding a lease occupies one slot until it settles or expires.
    case concurrency

    public var description: String { rawValue }
}

/// How a time-window dimension admits cost.
public enum Algorithm: String, Sendable, Hashable, CaseIterable {
    /// Exact per-call log. In ANY window of length `window` the admitted cost never
    /// exceeds `limit`; retry hints are exact. Memory per key grows with the calls
    /// admitted in one window.
    case slidingWindow = "sliding-window"
    /// Generic cell rate algorithm (a token bucket with continuous refill). Over any
    /// interval of length T the admitted cost is at most `burst + limit * T / window`.
    /// One timestamp of state.
    case gcra
}

/// One limit on one dimension: at most `limit` units per `window` nanoseconds.
///
/// For `.concurrency` only `limit` matters (slots), the algorithm and window are ignored.
public struct Limit: Sendable, Hashable {
    public var algorithm: Algorithm
    /// Units admitted per window. Must be at least 1.
    public var limit: UInt64
    /// The window, in nanoseconds. Must be at least 1.
    public var window: UInt64
    /// GCRA only: the most units admitted at once from a full bucket. Defaults to `limit`.
    public var burst: UInt64

    public init(algorithm: Algorithm = .slidingWindow, limit: UInt64, window: UInt64, burst: UInt64? = nil) {
        precondition(limit > 0, "a limit must admit at least one unit")
        precondition(window > 0, "a window must be at least 1 ns long")
        self.algorithm = algorithm
        self.limit = limit
        self.window = window
        self.burst = max(burst ?? limit, 1)
    }

    /// A concurrency limit of `slots` calls in flight.
    public static func concurrent(_ slots: UInt64) -> Limit {
        Limit(algorithm: .gcra, limit: slots, window: 1)
    }

    /// `limit` units per minute.
    public static func perMinute(_ limit: UInt64, algorithm: Algorithm = .slidingWindow) -> Limit {
        Limit(algorithm: algorithm, limit: limit, window: 60 * Nanoseconds.perSecond)
    }

    /// The largest cost one call may ask for: anything above it is `tooLarge`.
    @inlinable
    var capacity: UInt64 { algorithm == .gcra ? burst : limit }
}

/// The limits one call is checked against, one optional limit per dimension.
///
/// A stored value, not an array, so that a decision never allocates.
public struct LimitSet: Sendable, Hashable {
    public var requests: Limit?
    public var tokens: Limit?
    public var concurrency: Limit?
    /// Shadow mode: decisions are made and reported but the call is always allowed.
    public var shadow: Bool

    public init(requests: Limit? = nil, tokens: Limit? = nil, concurrency: Limit? = nil, shadow: Bool = false) {
        self.requests = requests
        self.tokens = tokens
        self.concurrency = concurrency
        self.shadow = shadow
    }

    /// The limit on `dimension`, if any.
    public subscript(dimension: Dimension) -> Limit? {
        switch dimension {
        case .requests: requests
        case .tokens: tokens
        case .concurrency: concurrency
        }
    }
}
