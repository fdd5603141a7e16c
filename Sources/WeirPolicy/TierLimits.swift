/// The limits of one rule for one tier (or for every tier, when `tier` is `all`).
///
/// Every figure is per account and per the rule's window; nil means the dimension
/// is not limited. A catalogue read from YAML never holds a zero.
public struct TierLimits: Sendable, Equatable {
    /// The name of the tier these limits are for, or `all` (see `TierLimits.allTiers`).
    public var tier: String
    /// Calls per window.
    public var requests: UInt64?
    /// Units of the rule's meter (tokens, characters, images) per window.
    public var tokens: UInt64?
    /// Calls in flight at once (slots).
    public var concurrency: UInt64?

    /// The tier name that means "every tier".
    public static let allTiers = "all"

    public init(tier: String, requests: UInt64? = nil, tokens: UInt64? = nil, concurrency: UInt64? = nil) {
        self.tier = tier
        self.requests = requests
        self.tokens = tokens
        self.concurrency = concurrency
    }
}
