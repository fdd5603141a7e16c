import Foundation
import Testing
import WeirCore
@testable import WeirPolicy

@Suite struct CatalogueYAMLTests {
    @Test func builtInYAMLIsCanonicalAndCommented() {
        let text = Catalogue.builtIn.yaml()
        #expect(text.hasPrefix("# Weir rate-limit catalogue."))
        #expect(text.contains("""
              - name: text-minimax-m2-stable
                api: text
                models: [MiniMax-M2-Stable]
                scope: per-model
                meter: tokens
                algorithm: sliding-window
                window: 1m
                default_output_reservation: 4096
                shadow: false
                limits:
                  free: { requests: 20, tokens: 1000000 }
                  paid: { requests: 500, tokens: 20000000 }
            """))
        #expect(text.contains("    recharge_threshold: 0.01\n"))
        #expect(text.contains("      all: { requests: 120, concurrency: 20 }\n"))
        // Every rule key is explained in a comment.
        for key in CatalogueReader.ruleKeys + CatalogueReader.tierKeys + CatalogueReader.accountKeys {
            #expect(text.contains("#   \(key) ") || text.contains("#   \(key)\n"), "no comment for \(key)")
        }
        #expect(text.hasSuffix("accounts: []\n"))
    }

    @Test func awkwardNamesAndFiguresRoundTrip() throws {
        let catalogue = Catalogue(
            tiers: [
                Tier(name: "yes", rechargeThreshold: 0),
                Tier(name: "1", rechargeThreshold: Decimal(string: "0.001")!),
                Tier(name: "with space: and colon", rechargeThreshold: Decimal(string: "12345.6789")!),
            ],
            rules: [
                Rule(
                    name: "a: b # c", api: "null",
                    models: ["02", "#hash", "quote\"d", "uni✓", "tab\tchar", "-dash", "[x]", "{y}", "a,b", "~", "line\nbreak", "\u{85}next", " lead", "trail "],
                    scope: .shared, meter: .characters, algorithm: .gcra, window: 1_500_000, burst: 7,
                    shadow: true,
                    limits: [
                        TierLimits(tier: "yes", requests: 1, tokens: UInt64.max),
                        TierLimits(tier: "with space: and colon", concurrency: 3),
                    ]
                ),
                Rule(name: "true", api: "false", window: 1, limits: [TierLimits(tier: "all", requests: 5)]),
                Rule(name: "day", api: "x", window: 86_400 * Nanoseconds.perSecond, limits: [TierLimits(tier: "1", requests: 5)]),
            ],
            accounts: [
                AccountProfile(
                    id: "@acme!", apiKeyHashes: [String(repeating: "ab", count: 32)], pinnedTier: "1",
                    recharges: Decimal(string: "0.5")!,
                    overrides: [Override(rule: "a: b # c", tokens: 9), Override(rule: "true", model: "any", requests: 2, concurrency: 1)]
                ),
                AccountProfile(id: "9"),
            ],
            shadow: true
        )
        let text = catalogue.yaml()
        #expect(try Catalogue.parse(yaml: text, source: "awkward.yaml") == catalogue, "\(text)")
    }

    static let windowCases: [(UInt64, String)] = [
        (60 * Nanoseconds.perSecond, "1m"), (90 * Nanoseconds.perSecond, "90s"), (500 * Nanoseconds.perMillisecond, "500ms"),
        (3_600 * Nanoseconds.perSecond, "1h"), (86_400 * Nanoseconds.perSecond, "1d"), (1_500, "1500ns"), (2_000, "2us"), (1, "1ns"),
    ]

    @Test(arguments: windowCases)
    func windowsAreWrittenInTheLargestExactUnit(nanoseconds: UInt64, text: String) {
        #expect(ScalarSyntax.format(duration: nanoseconds) == text)
        #expect(ScalarSyntax.duration(text) == .value(nanoseconds))
    }
}

extension CatalogueYAMLTests {
    @Test("a rule's max_wait is written and read back")
    func maxWaitRoundTrips() throws {
        var rule = Rule(name: "chat", api: "text", models: ["MiniMax-M2"], limits: [TierLimits(tier: "all", requests: 5)])
        rule.maxWait = 2_500_000_000
        let catalogue = Catalogue(tiers: [Tier(name: "free", rechargeThreshold: 0)], rules: [rule])
        let text = catalogue.yaml()
        #expect(text.contains("max_wait: 2500ms"))
        let read = try Catalogue.parse(yaml: text, source: "round-trip.yaml")
        #expect(read.rules.first?.maxWait == 2_500_000_000)
        #expect(read.waitsByDefault)
        #expect(!Catalogue.builtIn.waitsByDefault, "the built-in catalogue answers at once")
    }
}
