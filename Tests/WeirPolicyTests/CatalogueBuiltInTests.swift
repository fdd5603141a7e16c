import Foundation
import Testing
import WeirCore
@testable import WeirPolicy

/// One row of the DESIGN.md default catalogue, for one model.
struct DesignRow: Sendable, CustomTestStringConvertible {
    var api: String
    var model: String
    /// `free`, `paid`, or nil for every tier.
    var tier: String?
    var rpm: UInt64
    var tpm: UInt64?
    var concurrency: UInt64?
    var meter: Meter
    var rule: String

    var testDescription: String { "\(api)/\(model) \(tier ?? "all")" }
}

/// The table in DESIGN.md, "The default catalogue", one entry per (model, tier row).
/// "(any)" models are checked with a made-up model name and the empty string.
let designTable: [DesignRow] = {
    var rows: [DesignRow] = []
    func add(_ api: String, _ models: [String], _ tier: String?, rpm: UInt64, tpm: UInt64? = nil, concurrency: UInt64? = nil, meter: Meter = .none, rule: String) {
        for model in models {
            rows.append(DesignRow(api: api, model: model, tier: tier, rpm: rpm, tpm: tpm, concurrency: concurrency, meter: meter, rule: rule))
        }
    }
    add("text", ["MiniMax-M2"], nil, rpm: 20, tpm: 1_000_000, meter: .tokens, rule: "text-minimax-m2")
    add("text", ["MiniMax-M2-Stable"], "free", rpm: 20, tpm: 1_000_000, meter: .tokens, rule: "text-minimax-m2-stable")
    add("text", ["MiniMax-M2-Stable"], "paid", rpm: 500, tpm: 20_000_000, meter: .tokens, rule: "text-minimax-m2-stable")
    add("t2a", ["speech-2.6-turbo", "speech-2.6-hd", "speech-02-turbo", "speech-02-hd"], nil, rpm: 60, tpm: 20_000, meter: .characters, rule: "t2a")
    add("voice-cloning", ["any-model", ""], nil, rpm: 60, rule: "voice-cloning")
    add("voice-design", ["any-model", ""], nil, rpm: 20, rule: "voice-design")
    add("video-generation", ["MiniMax-Hailuo-2.3", "MiniMax-Hailuo-2.3-Fast", "MiniMax-Hailuo-02"], nil, rpm: 5, rule: "video-generation")
    add("image-generation", ["image-01"], nil, rpm: 10, tpm: 60, meter: .images, rule: "image-generation")
    add("music-generation", ["Music-2.0"], nil, rpm: 120, concurrency: 20, rule: "music-generation")
    return rows
}()

@Suite struct BuiltInCatalogueTests {
    @Test("every row of the DESIGN.md table resolves to its figures", arguments: designTable)
    func designRow(_ row: DesignRow) throws {
        let accounts = switch row.tier {
        case "free": [freeAccount]
        case "paid": [paidAccount]
        default: [freeAccount, paidAccount]
        }
        for account in accounts {
            let resolution = try Catalogue.builtIn.resolve(account: account, api: row.api, model: row.model)
            let expected = LimitSet(
                requests: Limit(algorithm: .slidingWindow, limit: row.rpm, window: minute),
                tokens: row.tpm.map { Limit(algorithm: .slidingWindow, limit: $0, window: minute) },
                concurrency: row.concurrency.map(Limit.concurrent),
                shadow: false
            )
            #expect(resolution.limits == expected)
            #expect(resolution.key == LimitKey(account: account.id, scope: "\(row.api)/\(row.model)"))
            #expect(resolution.rule.name == row.rule)
            #expect(resolution.rule.meter == row.meter)
            #expect(resolution.rule.scope == .perModel)
            #expect(resolution.rule.defaultOutputReservation == (row.api == "text" ? 4096 : nil))
            #expect(resolution.tier.name == (account == paidAccount ? "paid" : "free"))
        }
    }

    @Test func tableCoversEveryBuiltInModel() {
        let listed = Set(Catalogue.builtIn.rules.flatMap { rule in rule.models.map { "\(rule.api)/\($0)" } })
        let tested = Set(designTable.map { "\($0.api)/\($0.model)" })
        #expect(listed.subtracting(tested).isEmpty)
        #expect(Catalogue.builtIn.rules.count == 8)
    }

    @Test func tiersAreFreeAndPaid() {
        #expect(Catalogue.builtIn.tiers == [
            Tier(name: "free", rechargeThreshold: 0),
            Tier(name: "paid", rechargeThreshold: Decimal(string: "0.01")!),
        ])
        #expect(Catalogue.builtIn.accounts.isEmpty)
        #expect(!Catalogue.builtIn.shadow)
    }

    @Test func roundTripsThroughYAML() throws {
        let text = Catalogue.builtIn.yaml()
        #expect(try Catalogue.parse(yaml: text, source: "built-in.yaml") == Catalogue.builtIn)
    }
}

