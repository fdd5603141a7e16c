import Foundation
import Testing
import WeirCore
@testable import WeirPolicy

let freeAccount = AccountProfile(id: "free-account")
let paidAccount = AccountProfile(id: "paid-account", recharges: Decimal(string: "0.01")!)
let minute: UInt64 = 60 * Nanoseconds.perSecond

@Suite struct TierTests {
    let catalogue = Catalogue.builtIn

    @Test(arguments: [
        ("0", "free"), ("0.009", "free"), ("0.01", "paid"), ("0.02", "paid"), ("1000000", "paid"),
    ])
    func tierFromRecharges(recharges: String, tier: String) {
        let account = AccountProfile(id: "a", recharges: Decimal(string: recharges)!)
        #expect(catalogue.tier(for: account).name == tier)
    }

    @Test func pinnedTierWins() {
        #expect(catalogue.tier(for: AccountProfile(id: "a", pinnedTier: "free", recharges: 500)).name == "free")
        #expect(catalogue.tier(for: AccountProfile(id: "a", pinnedTier: "paid", recharges: 0)).name == "paid")
    }

    @Test func unknownPinnedTierFallsBackToRecharges() {
        #expect(catalogue.tier(for: AccountProfile(id: "a", pinnedTier: "gold", recharges: 0)).name == "free")
        #expect(catalogue.tier(for: AccountProfile(id: "a", pinnedTier: "gold", recharges: 1)).name == "paid")
    }

    @Test func negativeRechargesAreInTheLowestTier() {
        #expect(catalogue.tier(for: AccountProfile(id: "a", recharges: -5)).name == "free")
    }

    @Test func highestTierWhoseThresholdIsMet() throws {
        let catalogue = try loadFixture("valid")
        #expect(catalogue.tier(for: AccountProfile(id: "a", recharges: Decimal(string: "999.99")!)).name == "paid")
        #expect(catalogue.tier(for: AccountProfile(id: "a", recharges: 1000)).name == "scale")
    }

    @Test func upgradeChangesTheLimitsButNotTheKey() throws {
        var account = AccountProfile(id: "acme")
        let before = try catalogue.resolve(account: account, api: "text", model: "MiniMax-M2-Stable")
        account.recharges += Decimal(string: "0.01")!
        let after = try catalogue.resolve(account: account, api: "text", model: "MiniMax-M2-Stable")
        #expect(before.limits.requests?.limit == 20)
        #expect(after.limits.requests?.limit == 500)
        #expect(before.key == after.key)
    }

    @Test func catalogueWithoutTiersAnswersAnEmptyTier() {
        let catalogue = Catalogue(tiers: [], rules: [Rule(name: "r", api: "text", limits: [TierLimits(tier: "all", requests: 1)])])
        #expect(catalogue.tier(for: freeAccount).name == "")
        #expect(throws: ResolutionError.notAvailable(api: "text", model: "m", tier: "")) {
            try catalogue.resolve(account: freeAccount, api: "text", model: "m")
        }
    }
}

@Suite struct ResolutionTests {
    @Test func overrideReplacesOnlyTheLimitItNames() throws {
        let account = AccountProfile(id: "acme", overrides: [Override(rule: "text-minimax-m2", requests: 100)])
        let resolution = try Catalogue.builtIn.resolve(account: account, api: "text", model: "MiniMax-M2")
        #expect(resolution.limits.requests == Limit(algorithm: .slidingWindow, limit: 100, window: minute))
        #expect(resolution.limits.tokens == Limit(algorithm: .slidingWindow, limit: 1_000_000, window: minute))
        #expect(resolution.limits.concurrency == nil)
        // Other rules of the same API keep their figures.
        let other = try Catalogue.builtIn.resolve(account: account, api: "text", model: "MiniMax-M2-Stable")
        #expect(other.limits.requests?.limit == 20)
    }

    @Test func overrideCanAddADimension() throws {
        let account = AccountProfile(id: "acme", overrides: [Override(rule: "video-generation", concurrency: 2)])
        let resolution = try Catalogue.builtIn.resolve(account: account, api: "video-generation", model: "MiniMax-Hailuo-02")
        #expect(resolution.limits.concurrency == Limit.concurrent(2))
        #expect(resolution.limits.requests?.limit == 5)
    }

    @Test func modelOverrideBeatsRuleWideOverrideWhateverTheOrder() throws {
        let overrides = [
            Override(rule: "t2a", model: "speech-02-hd", requests: 300),
            Override(rule: "t2a", requests: 100, tokens: 50_000),
        ]
        for order in [overrides, overrides.reversed()] {
            let account = AccountProfile(id: "acme", overrides: order)
            let hd = try Catalogue.builtIn.resolve(account: account, api: "t2a", model: "speech-02-hd")
            #expect(hd.limits.requests?.limit == 300)
            #expect(hd.limits.tokens?.limit == 50_000)
            let turbo = try Catalogue.builtIn.resolve(account: account, api: "t2a", model: "speech-02-turbo")
            #expect(turbo.limits.requests?.limit == 100)
            #expect(turbo.limits.tokens?.limit == 50_000)
        }
    }

    @Test func overrideKeepsTheRuleAlgorithmWindowAndShadow() throws {
        let catalogue = try loadFixture("valid")
        let account = AccountProfile(id: "x", overrides: [Override(rule: "video", requests: 7)])
        let resolution = try catalogue.resolve(account: account, api: "video-generation", model: "MiniMax-Hailuo-02")
        // The burst is a duration (2m of a 1h window): 7 per hour holds floor(7 / 30) = 0, so 1.
        #expect(resolution.limits.requests == Limit(algorithm: .gcra, limit: 7, window: 3_600 * Nanoseconds.perSecond, burst: 1))
        #expect(resolution.limits.shadow)
    }

    @Test func zeroOverridesAreIgnored() throws {
        let account = AccountProfile(id: "acme", overrides: [Override(rule: "text-minimax-m2", requests: 0)])
        let resolution = try Catalogue.builtIn.resolve(account: account, api: "text", model: "MiniMax-M2")
        #expect(resolution.limits.requests?.limit == 20)
    }

    @Test func accountsFromTheFileCarryTheirOverrides() throws {
        let catalogue = try loadFixture("valid")
        let acme = try #require(catalogue.account(id: "acme"))
        #expect(acme.pinnedTier == "paid")
        let text = try catalogue.resolve(account: acme, api: "text", model: "MiniMax-M2")
        #expect(text.limits.requests?.limit == 100)
        let stable = try catalogue.resolve(account: acme, api: "text", model: "MiniMax-M2-Stable")
        #expect(stable.limits.requests?.limit == 500)
        #expect(stable.limits.tokens?.limit == 50_000_000)
        #expect(stable.limits.concurrency == Limit.concurrent(4))
        #expect(catalogue.account(id: "nobody") == nil)
        #expect(catalogue.account(id: "globex")?.recharges == Decimal(string: "2500.5"))
    }

    @Test func unknownAPI() {
        #expect(throws: ResolutionError.unknownAPI("chat")) {
            try Catalogue.builtIn.resolve(account: freeAccount, api: "chat", model: "MiniMax-M2")
        }
    }

    @Test func unknownModel() {
        #expect(throws: ResolutionError.unknownModel(api: "text", model: "gpt-4")) {
            try Catalogue.builtIn.resolve(account: freeAccount, api: "text", model: "gpt-4")
        }
        // Model names are case-sensitive and exact.
        #expect(throws: ResolutionError.unknownModel(api: "text", model: "minimax-m2")) {
            try Catalogue.builtIn.resolve(account: freeAccount, api: "text", model: "minimax-m2")
        }
        #expect(throws: ResolutionError.unknownModel(api: "text", model: "")) {
            try Catalogue.builtIn.resolve(account: freeAccount, api: "text", model: "")
        }
    }

    @Test func notAvailableInTheAccountsTier() throws {
        let catalogue = try loadFixture("valid")
        #expect(throws: ResolutionError.notAvailable(api: "video-generation", model: "MiniMax-Hailuo-2.3-Fast", tier: "free")) {
            try catalogue.resolve(account: freeAccount, api: "video-generation", model: "MiniMax-Hailuo-2.3-Fast")
        }
        let paid = try catalogue.resolve(account: paidAccount, api: "video-generation", model: "MiniMax-Hailuo-2.3-Fast")
        #expect(paid.rule.name == "video-other")
    }

    @Test func errorDescriptions() {
        #expect(ResolutionError.unknownAPI("chat").description == "unknown API `chat`")
        #expect(ResolutionError.unknownModel(api: "text", model: "gpt-4").description == "unknown model `gpt-4` for API `text`")
        #expect(ResolutionError.notAvailable(api: "video-generation", model: "m", tier: "free").description
            == "model `m` of API `video-generation` is not available in tier `free`")
    }

    @Test func sharedScopeKeysByRuleName() throws {
        let catalogue = try loadFixture("valid")
        let a = try catalogue.resolve(account: paidAccount, api: "video-generation", model: "MiniMax-Hailuo-2.3")
        let b = try catalogue.resolve(account: paidAccount, api: "video-generation", model: "MiniMax-Hailuo-02")
        #expect(a.key == LimitKey(account: "paid-account", scope: "video-generation/video"))
        #expect(a.key == b.key)
        #expect(a.rule.scope == .shared)
        // 2m of a 1h window's rate: 100 / 30 = 3 units.
        #expect(a.limits.requests == Limit(algorithm: .gcra, limit: 100, window: 3_600 * Nanoseconds.perSecond, burst: 3))
        #expect(a.limits.shadow)
    }

    @Test func listedModelWinsOverRuleWithoutModels() throws {
        let catalogue = try loadFixture("valid")
        let listed = try catalogue.resolve(account: paidAccount, api: "video-generation", model: "MiniMax-Hailuo-02")
        #expect(listed.rule.name == "video")
        let other = try catalogue.resolve(account: paidAccount, api: "video-generation", model: "anything-else")
        #expect(other.rule.name == "video-other")
        #expect(other.key.scope == "video-generation/anything-else")
    }

    @Test(arguments: ["", "voice-01", "some/model with spaces"])
    func ruleWithoutModelsMatchesAnyModel(model: String) throws {
        let resolution = try Catalogue.builtIn.resolve(account: freeAccount, api: "voice-cloning", model: model)
        #expect(resolution.rule.name == "voice-cloning")
        #expect(resolution.key == LimitKey(account: "free-account", scope: "voice-cloning/\(model)"))
        #expect(resolution.limits.requests?.limit == 60)
    }

    @Test func globalShadowMarksEveryLimitSet() throws {
        var catalogue = Catalogue.builtIn
        #expect(try !catalogue.resolve(account: freeAccount, api: "text", model: "MiniMax-M2").limits.shadow)
        catalogue.shadow = true
        for row in designTable {
            #expect(try catalogue.resolve(account: freeAccount, api: row.api, model: row.model).limits.shadow)
        }
    }

    @Test func ruleShadowMarksOnlyThatRule() throws {
        var catalogue = Catalogue.builtIn
        catalogue.rules[0].shadow = true
        #expect(try catalogue.resolve(account: freeAccount, api: "text", model: "MiniMax-M2").limits.shadow)
        #expect(try !catalogue.resolve(account: freeAccount, api: "text", model: "MiniMax-M2-Stable").limits.shadow)
    }

    @Test func settingRulesRebuildsTheLookup() throws {
        var catalogue = Catalogue.builtIn
        catalogue.rules.append(Rule(name: "chat", api: "chat", models: ["m"], limits: [TierLimits(tier: "paid", requests: 3)]))
        #expect(try catalogue.resolve(account: paidAccount, api: "chat", model: "m").limits.requests?.limit == 3)
        catalogue.tiers[1].name = "pro"
        #expect(throws: ResolutionError.notAvailable(api: "chat", model: "m", tier: "pro")) {
            try catalogue.resolve(account: paidAccount, api: "chat", model: "m")
        }
        catalogue.accounts = [AccountProfile(id: "acme")]
        #expect(catalogue.account(id: "acme") == AccountProfile(id: "acme"))
    }

    @Test func perModelScopeStringsAreBuiltOnce() throws {
        // Two resolutions of the same model share the scope's storage (no string built per call).
        let a = try Catalogue.builtIn.resolve(account: freeAccount, api: "text", model: "MiniMax-M2-Stable")
        let b = try Catalogue.builtIn.resolve(account: paidAccount, api: "text", model: "MiniMax-M2-Stable")
        #expect(a.key.scope == "text/MiniMax-M2-Stable")
        let shared = a.key.scope.utf8.withContiguousStorageIfAvailable { $0.baseAddress }
            == b.key.scope.utf8.withContiguousStorageIfAvailable { $0.baseAddress }
        #expect(shared)
    }

    @Test func unvalidatedCatalogueNeverTraps() throws {
        // Zero limits and windows, duplicate rules and tiers: all tolerated by resolve.
        let catalogue = Catalogue(
            tiers: [Tier(name: "t", rechargeThreshold: 5), Tier(name: "t", rechargeThreshold: 1)],
            rules: [
                Rule(name: "a", api: "x", window: 0, burst: 0, limits: [TierLimits(tier: "all", requests: 0, tokens: 5)]),
                Rule(name: "b", api: "x", limits: [TierLimits(tier: "all", requests: 9)]),
            ]
        )
        let resolution = try catalogue.resolve(account: AccountProfile(id: "z", overrides: [Override(rule: "a", concurrency: 0)]), api: "x", model: "")
        #expect(resolution.rule.name == "a")
        #expect(resolution.limits.requests == nil)
        #expect(resolution.limits.tokens == Limit(algorithm: .slidingWindow, limit: 5, window: 1))
        #expect(resolution.limits.concurrency == nil)
        let gcra = Catalogue(
            tiers: [Tier(name: "t", rechargeThreshold: 0)],
            rules: [Rule(name: "g", api: "x", algorithm: .gcra, burst: 0, limits: [TierLimits(tier: "t", requests: 10)])]
        )
        #expect(try gcra.resolve(account: freeAccount, api: "x", model: "m").limits.requests?.burst == 10)
    }

    @Test("one burst means the same for requests and tokens: a share of each limit")
    func burstScalesPerDimension() throws {
        let catalogue = Catalogue(
            tiers: [Tier(name: "t", rechargeThreshold: 0)],
            rules: [Rule(name: "g", api: "x", meter: .tokens, algorithm: .gcra, window: 60 * Nanoseconds.perSecond,
                         burst: 6 * Nanoseconds.perSecond, limits: [TierLimits(tier: "t", requests: 500, tokens: 20_000_000)])]
        )
        let limits = try catalogue.resolve(account: freeAccount, api: "x", model: "m").limits
        #expect(limits.requests?.burst == 50)
        #expect(limits.tokens?.burst == 2_000_000)
    }
}
