import Testing
import WeirCore
import WeirPolicy

/// The catalogue and the store together: what an account sees across a recharge
/// and an override, decision by decision.
@Suite("Tier upgrades and overrides through the store")
struct TierUpgradeTests {
    let catalogue = Catalogue.builtIn

    func decide(_ store: InMemoryStore, _ account: AccountProfile, model: String = "MiniMax-M2-Stable", units: UInt64 = 100) throws -> Decision {
        let resolution = try catalogue.resolve(account: account, api: "text", model: model)
        return store.acquire(AdmissionRequest(key: resolution.key, limits: resolution.limits, units: units))
    }

    @Test("a recharge crossing the paid threshold moves MiniMax-M2-Stable from 20 to 500 RPM at the next decision, usage kept")
    func rechargeUpgradesAtOnce() throws {
        let clock = ManualClock(start: 1_000_000_000)
        let store = InMemoryStore(clock: clock)
        var account = AccountProfile(id: "acct-upgrade")
        for call in 1...20 {
            let decision = try decide(store, account)
            #expect(decision.isAllowed, "free call \(call)")
            clock.advance(by: 1_000_000)
        }
        let refused = try decide(store, account)
        #expect(!refused.isAllowed)
        #expect(refused.reason == .requests)
        #expect(refused.limits.requests == DimensionStatus(limit: 20, remaining: 0, reset: refused.limits.requests!.reset))

        account.recharges = 0.01  // exactly the paid threshold
        #expect(catalogue.tier(for: account).name == "paid")
        let upgraded = try decide(store, account)
        #expect(upgraded.isAllowed)
        // 20 earlier calls still count: 500 - 21 = 479 left, not 499.
        #expect(upgraded.limits.requests?.limit == 500)
        #expect(upgraded.limits.requests?.remaining == 479)
        #expect(upgraded.limits.tokens?.limit == 20_000_000)
        #expect(upgraded.limits.tokens?.remaining == 20_000_000 - 2_100)
    }

    @Test("just below the threshold stays free")
    func belowThreshold() throws {
        let account = AccountProfile(id: "acct-below", recharges: 0.009)
        #expect(catalogue.tier(for: account).name == "free")
        let resolution = try catalogue.resolve(account: account, api: "text", model: "MiniMax-M2-Stable")
        #expect(resolution.limits.requests?.limit == 20)
    }

    @Test("an override replaces just its limit, and only for its account")
    func overrideReplacesOneLimit() throws {
        let store = InMemoryStore(clock: ManualClock(start: 1))
        let custom = AccountProfile(id: "acct-custom", overrides: [Override(rule: "text-minimax-m2", model: nil, requests: 100, tokens: nil, concurrency: nil)])
        let plain = AccountProfile(id: "acct-plain")
        let customLimits = try catalogue.resolve(account: custom, api: "text", model: "MiniMax-M2").limits
        #expect(customLimits.requests?.limit == 100)
        #expect(customLimits.tokens?.limit == 1_000_000)
        for _ in 0..<21 { _ = try decide(store, plain, model: "MiniMax-M2") }
        var admitted = 0
        for _ in 0..<101 where try decide(store, custom, model: "MiniMax-M2").isAllowed { admitted += 1 }
        #expect(admitted == 100)
        #expect(try !decide(store, plain, model: "MiniMax-M2").isAllowed)
    }
}
