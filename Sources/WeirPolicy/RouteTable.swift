import WeirCore

/// The lookup tables behind `Catalogue.resolve`: the answer for every (API, model,
/// tier) worked out once, when the catalogue is built, so that a resolution is two
/// hash lookups and no allocation (bar a wildcard per-model key, see `Slot.scope`).
///
/// Built from any catalogue, validated or not, without trapping: where rules
/// overlap the first in file order wins, a zero limit counts as no limit, and a zero
/// window as 1 ns. Validation (`Catalogue.parse`) rejects all of these.
struct RouteTable: Sendable {
    /// What one (API, model, tier) resolves to.
    struct Slot: Sendable {
        /// Index of the rule in `Catalogue.rules`.
        var rule: Int
        /// The tier's limits in the rule's algorithm and window, shadow flag included.
        var limits: LimitSet
        /// The key scope, built once and shared by every key that uses it. Nil only for
        /// a per-model rule without a model list: its scope depends on the model asked
        /// for, so it is built per call.
        var scope: String?
    }

    /// The slots of one (API, model) or one wildcard API, indexed by tier index.
    struct Route: Sendable {
        var slots: [Slot?]
    }

    struct ModelKey: Hashable, Sendable {
        var api: String
        var model: String
    }

    /// Routes of rules that list their models.
    private(set) var models: [ModelKey: Route] = [:]
    /// Routes of rules that list no model, by API.
    private(set) var wildcards: [String: Route] = [:]
    /// Every API some rule names.
    private(set) var apis: Set<String> = []
    /// Tier index by name (the first, if names repeat).
    private(set) var tierIndices: [String: Int] = [:]

    init() {}

    init(tiers: [Tier], rules: [Rule], shadow: Bool) {
        for (index, tier) in tiers.enumerated() where tierIndices[tier.name] == nil {
            tierIndices[tier.name] = index
        }
        let empty = Route(slots: Array(repeating: nil, count: tiers.count))
        for (ruleIndex, rule) in rules.enumerated() {
            apis.insert(rule.api)
            // The limits of this rule per tier, computed once for all its models.
            let perTier: [LimitSet?] = tiers.map { tier in
                rule.limits(for: tier.name).map { Self.limitSet($0, rule: rule, shadow: shadow) }
            }
            let sharedScope = rule.scope == .shared ? rule.api + "/" + rule.name : nil
            if rule.models.isEmpty {
                var route = wildcards[rule.api] ?? empty
                Self.fill(&route, ruleIndex: ruleIndex, limits: perTier, scope: sharedScope)
                wildcards[rule.api] = route
            } else {
                for model in rule.models {
                    let key = ModelKey(api: rule.api, model: model)
                    var route = models[key] ?? empty
                    Self.fill(&route, ruleIndex: ruleIndex, limits: perTier, scope: sharedScope ?? rule.api + "/" + model)
                    models[key] = route
                }
            }
        }
    }

    /// Fills the tiers `limits` covers and no earlier rule took.
    private static func fill(_ route: inout Route, ruleIndex: Int, limits: [LimitSet?], scope: String?) {
        for (tier, limitSet) in limits.enumerated() where route.slots[tier] == nil {
            if let limitSet {
                route.slots[tier] = Slot(rule: ruleIndex, limits: limitSet, scope: scope)
            }
        }
    }

    /// The `LimitSet` of one tier's entry of `rule`.
    static func limitSet(_ entry: TierLimits, rule: Rule, shadow: Bool) -> LimitSet {
        LimitSet(
            requests: windowLimit(entry.requests, rule: rule),
            tokens: windowLimit(entry.tokens, rule: rule),
            concurrency: concurrencyLimit(entry.concurrency),
            shadow: rule.shadow || shadow
        )
    }

    /// A requests or tokens limit of `value` units per window of `rule`; nil for nil or 0.
    /// The rule's burst (a duration) applies to GCRA only, scaled to this limit.
    static func windowLimit(_ value: UInt64?, rule: Rule) -> Limit? {
        guard let value, value > 0 else { return nil }
        return Limit(algorithm: rule.algorithm, limit: value, window: max(rule.window, 1), burst: rule.burstUnits(forLimit: value))
    }

    /// A concurrency limit of `value` slots; nil for nil or 0.
    static func concurrencyLimit(_ value: UInt64?) -> Limit? {
        guard let value, value > 0 else { return nil }
        return Limit.concurrent(value)
    }
}
