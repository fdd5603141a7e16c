import WeirCore

/// Which limits apply to which models of one API, per tier.
///
/// A rule covers (API, model) pairs: its `api` with each of its `models`, or with any
/// model at all (the empty string included) when `models` is empty. A rule that lists
/// a model takes precedence over a rule of the same API that lists none.
public struct Rule: Sendable, Equatable {
    /// The rule's name, unique in its catalogue; overrides name it, and shared-scope
    /// keys are `<api>/<name>`.
    public var name: String
    /// The API the rule is for, e.g. `text`, `t2a`, `video-generation`.
    public var api: String
    /// The models covered; empty means every model of the API, `""` included.
    public var models: [String]
    /// Whether each model has its own budget (`perModel`) or the models share one.
    public var scope: Scope
    /// What the `tokens` dimension counts.
    public var meter: Meter
    /// How the time-window dimensions (requests, tokens) admit calls.
    public var algorithm: Algorithm
    /// The window of the requests and tokens limits, in nanoseconds (60 s by default).
    public var window: UInt64
    /// GCRA only: how much of the rate a full bucket holds, as a duration in nanoseconds.
    /// Each dimension's bucket holds `limit * burst / window` units (at least 1), so one
    /// setting means the same for requests and tokens; nil means a whole window's worth
    /// (each dimension's limit).
    public var burst: UInt64?

    /// The burst, in units, of a dimension limited to `limit` per window; nil when the
    /// rule sets none (or is not GCRA), which means the limit itself.
    public func burstUnits(forLimit limit: UInt64) -> UInt64? {
        guard algorithm == .gcra, let burst, burst > 0 else { return nil }
        let window = max(self.window, 1)
        let product = limit.multipliedFullWidth(by: burst)
        let units = product.high >= window ? UInt64.max : window.dividingFullWidth(product).quotient
        return max(units, 1)
    }
    /// Meter units reserved for a call's output when the caller does not say how much
    /// it wants (e.g. no `max_tokens`); nil means none.
    public var defaultOutputReservation: UInt64?
    /// Shadow mode for this rule: decisions are reported but calls are never refused.
    public var shadow: Bool
    /// How long a call of this rule waits for room when its caller does not say
    /// (`max_wait_ms`), in nanoseconds; nil: it does not wait. A server holds it to its
    /// own `--max-wait-ms`.
    public var maxWait: UInt64? = nil
    /// The limits per tier (or `all`), in file order.
    public var limits: [TierLimits]

    /// The default window: 60 seconds.
    public static let defaultWindow: UInt64 = 60 * Nanoseconds.perSecond

    public init(
        name: String,
        api: String,
        models: [String] = [],
        scope: Scope = .perModel,
        meter: Meter = .none,
        algorithm: Algorithm = .slidingWindow,
        window: UInt64 = Rule.defaultWindow,
        burst: UInt64? = nil,
        defaultOutputReservation: UInt64? = nil,
        shadow: Bool = false,
        limits: [TierLimits]
    ) {
        self.name = name
        self.api = api
        self.models = models
        self.scope = scope
        self.meter = meter
        self.algorithm = algorithm
        self.window = window
        self.burst = burst
        self.defaultOutputReservation = defaultOutputReservation
        self.shadow = shadow
        self.limits = limits
    }

    /// The limits for `tier`: its own entry, else the `all` entry, else nil.
    public func limits(for tier: String) -> TierLimits? {
        limits.first { $0.tier == tier } ?? limits.first { $0.tier == TierLimits.allTiers }
    }
}
