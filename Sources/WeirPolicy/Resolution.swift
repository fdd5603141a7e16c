import WeirCore

/// The limits one call of one account is checked against, and where they came from.
public struct Resolution: Sendable, Equatable {
    /// The rule that covers the call's (API, model).
    public var rule: Rule
    /// The account's tier.
    public var tier: Tier
    /// The budget the call draws on: `<api>/<model>` for a per-model rule,
    /// `<api>/<rule name>` for a shared one, under the account's id.
    public var key: LimitKey
    /// The tier's limits (with the account's overrides applied), in the rule's
    /// algorithm and window; `shadow` is set when the rule or the catalogue is in
    /// shadow mode.
    public var limits: LimitSet

    public init(rule: Rule, tier: Tier, key: LimitKey, limits: LimitSet) {
        self.rule = rule
        self.tier = tier
        self.key = key
        self.limits = limits
    }
}
