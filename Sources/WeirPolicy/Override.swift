/// One account's replacement for some limits of one rule (a custom contract).
///
/// An override replaces only the dimensions it sets; the others keep the tier's
/// figures. A dimension the tier leaves unlimited becomes limited. When both a
/// rule-wide override (`model == nil`) and a model-specific one set the same
/// dimension, the model-specific one wins.
public struct Override: Sendable, Equatable {
    /// The name of the rule whose limits are replaced.
    public var rule: String
    /// The model the override is for, or nil for every model of the rule.
    public var model: String?
    /// Calls per window.
    public var requests: UInt64?
    /// Units of the rule's meter per window.
    public var tokens: UInt64?
    /// Calls in flight at once.
    public var concurrency: UInt64?

    public init(rule: String, model: String? = nil, requests: UInt64? = nil, tokens: UInt64? = nil, concurrency: UInt64? = nil) {
        self.rule = rule
        self.model = model
        self.requests = requests
        self.tokens = tokens
        self.concurrency = concurrency
    }
}
