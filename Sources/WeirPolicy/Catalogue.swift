import Foundation
import WeirCore

/// The rate-limit policy: tiers, the rules that set limits per (API, model) and tier,
/// and the accounts the file knows about. Resolves a call to the limits it is checked
/// against.
///
/// Build a catalogue from YAML with `parse(yaml:source:)` or `load(contentsOf:)`,
/// which validate everything and report every problem at once, or use `builtIn`.
/// A catalogue built in code is not validated; `resolve` still never traps on it
/// (see `RouteTable` for how it reads inconsistent figures).
///
/// **Cost.** Lookup tables are built when the catalogue is created and rebuilt when
/// a property is set (linear in the catalogue's size): build once, resolve many
/// times. `resolve` is two hash lookups plus a scan of the account's overrides.
///
/// **Concurrency.** A value type: thread-safe to share; `resolve` never suspends.
public struct Catalogue: Sendable, Equatable {
    /// The tiers, lowest first; thresholds strictly increasing, the first one 0.
    public var tiers: [Tier] {
        didSet { routes = RouteTable(tiers: tiers, rules: rules, shadow: shadow) }
    }
    /// The rules, in file order.
    public var rules: [Rule] {
        didSet { routes = RouteTable(tiers: tiers, rules: rules, shadow: shadow) }
    }
    /// Whether a rule makes its calls wait for room by default (`Rule.maxWait`).
    /// (`Limiter.rulesWait` keeps it for the current catalogue, to be read per call.)
    public var waitsByDefault: Bool { rules.contains { $0.maxWait != nil } }
    /// Accounts configured in the file (an account registry may know more).
    public var accounts: [AccountProfile] {
        didSet { accountIndices = Self.indices(of: accounts) }
    }
    /// Global shadow mode: every resolved `LimitSet` has `shadow == true`.
    public var shadow: Bool {
        didSet { routes = RouteTable(tiers: tiers, rules: rules, shadow: shadow) }
    }

    private var routes: RouteTable
    private var accountIndices: [String: Int]

    public init(tiers: [Tier], rules: [Rule], accounts: [AccountProfile] = [], shadow: Bool = false) {
        self.tiers = tiers
        self.rules = rules
        self.accounts = accounts
        self.shadow = shadow
        self.routes = RouteTable(tiers: tiers, rules: rules, shadow: shadow)
        self.accountIndices = Self.indices(of: accounts)
    }

    public static func == (lhs: Catalogue, rhs: Catalogue) -> Bool {
        lhs.shadow == rhs.shadow && lhs.tiers == rhs.tiers && lhs.rules == rhs.rules && lhs.accounts == rhs.accounts
    }

    private static func indices(of accounts: [AccountProfile]) -> [String: Int] {
        var indices: [String: Int] = [:]
        for (index, account) in accounts.enumerated() where indices[account.id] == nil {
            indices[account.id] = index
        }
        return indices
    }

    // MARK: - Accounts and tiers

    /// The account with this id among `accounts`, or nil.
    public func account(id: String) -> AccountProfile? {
        accountIndices[id].map { accounts[$0] }
    }

    /// The tier `account` is in: its pinned tier when it names one of `tiers`, else the
    /// highest tier whose threshold its cumulative recharges meet, else the lowest.
    ///
    /// A catalogue without tiers (possible only when built in code) answers a tier
    /// named `""` with threshold 0, which no rule has limits for.
    public func tier(for account: AccountProfile) -> Tier {
        tierIndex(for: account).map { tiers[$0] } ?? Tier(name: "", rechargeThreshold: 0)
    }

    private func tierIndex(for account: AccountProfile) -> Int? {
        if let pinned = account.pinnedTier, let index = routes.tierIndices[pinned] {
            return index
        }
        guard !tiers.isEmpty else { return nil }
        var index = tiers.count - 1
        while index > 0 && tiers[index].rechargeThreshold > account.recharges {
            index -= 1
        }
        return index
    }

    // MARK: - Resolution

    /// The limits a call of `account` to `model` of `api` is checked against.
    ///
    /// The rule is the one listing `model` for `api`, else the one of `api` listing no
    /// model; its limits are those for the account's tier, else its `all` limits. The
    /// account's overrides of that rule then replace the dimensions they set
    /// (model-specific overrides after rule-wide ones).
    ///
    /// - Throws: `unknownAPI` when no rule names `api`, `unknownModel` when no rule of
    ///   `api` covers `model`, `notAvailable` when the covering rule has no limits for
    ///   the account's tier.
    /// - Complexity: two hash lookups and a scan of `account.overrides`; allocates only
    ///   the key of a per-model rule without a model list.
    public func resolve(account: AccountProfile, api: String, model: String) throws(ResolutionError) -> Resolution {
        guard let route = routes.models[RouteTable.ModelKey(api: api, model: model)] ?? routes.wildcards[api] else {
            throw routes.apis.contains(api) ? .unknownModel(api: api, model: model) : .unknownAPI(api)
        }
        guard let tierIndex = tierIndex(for: account), let slot = route.slots[tierIndex] else {
            throw .notAvailable(api: api, model: model, tier: tier(for: account).name)
        }
        let rule = rules[slot.rule]
        var limits = slot.limits
        if !account.overrides.isEmpty {
            Self.apply(account.overrides, of: rule, model: model, to: &limits)
        }
        return Resolution(
            rule: rule,
            tier: tiers[tierIndex],
            key: LimitKey(account: account.id, scope: slot.scope ?? api + "/" + model),
            limits: limits
        )
    }

    /// Replaces the dimensions that `overrides` of `rule` set: rule-wide ones first,
    /// then those for `model`, so the more specific wins. Zeros are ignored.
    private static func apply(_ overrides: [Override], of rule: Rule, model: String, to limits: inout LimitSet) {
        for pass in 0..<2 {
            for override in overrides where override.rule == rule.name {
                guard pass == 0 ? override.model == nil : override.model == model else { continue }
                if let requests = RouteTable.windowLimit(override.requests, rule: rule) {
                    limits.requests = requests
                }
                if let tokens = RouteTable.windowLimit(override.tokens, rule: rule) {
                    limits.tokens = tokens
                }
                if let concurrency = RouteTable.concurrencyLimit(override.concurrency) {
                    limits.concurrency = concurrency
                }
            }
        }
    }
}
