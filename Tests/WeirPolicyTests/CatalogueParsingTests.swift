import Foundation
import Testing
import WeirConformance
import WeirCore
@testable import WeirPolicy

/// The path of `Fixtures/<name>.yaml` in the test bundle.
func fixturePath(_ name: String) throws -> String {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: "yaml", subdirectory: "Fixtures"))
    return url.path
}

func loadFixture(_ name: String) throws -> Catalogue {
    try Catalogue.load(contentsOf: fixturePath(name))
}

/// The problems `Fixtures/<name>.yaml` is reported with, as `ConfigError.description`s.
func problems(in name: String) throws -> [String] {
    let path = try fixturePath(name)
    do {
        _ = try Catalogue.load(contentsOf: path)
        return []
    } catch {
        #expect(error.source == path)
        return error.errors.map(\.description)
    }
}

struct FixtureCase: Sendable, CustomTestStringConvertible {
    var file: String
    var expected: [String]
    var testDescription: String { "\(file).yaml" }
}

/// One fixture per kind of configuration error, with every message it must produce.
let fixtureCases: [FixtureCase] = [
    FixtureCase(file: "malformed", expected: [
        "line 7: not valid YAML: did not find expected '-' indicator at column 4 (while parsing a block collection that starts on line 5)",
    ]),
    FixtureCase(file: "unclosed-bracket", expected: [
        "line 8: not valid YAML: did not find expected ',' or ']' at column 11 (while parsing a flow sequence that starts on line 7)",
    ]),
    FixtureCase(file: "duplicate-key", expected: [
        "line 6: not valid YAML: key `api`, first on this line, appears again in the same mapping; each key may appear only once",
    ]),
    FixtureCase(file: "empty", expected: [
        "the file is empty: expected a mapping with `tiers` and `rules`",
    ]),
    FixtureCase(file: "top-level-list", expected: [
        "line 1: expected a mapping with `tiers` and `rules` at the top level, got a list",
    ]),
    FixtureCase(file: "unsupported-version", expected: [
        "version (line 1): unsupported version 2; this Weir reads version 1",
    ]),
    FixtureCase(file: "unknown-key", expected: [
        "colour (line 2): unknown key `colour`; allowed keys are version, shadow, tiers, rules, accounts",
        "tiers[0].discount (line 6): unknown key `discount`; allowed keys are name, recharge_threshold",
        "rules[0].windw (line 12): unknown key `windw` (did you mean `window`?); allowed keys are name, api, models, scope, meter, algorithm, window, burst, default_output_reservation, shadow, max_wait, limits",
        "rules[0].limits.all.rpm (line 14): unknown key `rpm`; allowed keys are requests, tokens, concurrency",
        "accounts[0].teir (line 17): unknown key `teir` (did you mean `tier`?); allowed keys are id, api_key_hashes, tier, recharges, overrides",
        "accounts[0].overrides[0].modle (line 21): unknown key `modle` (did you mean `model`?); allowed keys are rule, model, requests, tokens, concurrency",
    ]),
    FixtureCase(file: "missing-keys", expected: [
        "missing required top-level key `rules`",
        "tiers[0] (line 2): missing required key `name`",
        "accounts[0] (line 4): missing required key `id`",
        "accounts[0].overrides[0] (line 6): missing required key `rule`",
    ]),
    FixtureCase(file: "wrong-type", expected: [
        "shadow (line 1): expected true or false, got maybe",
        "tiers (line 2): expected a list of tiers, got free",
        "rules[0].api (line 5): expected a string, got a list",
        "rules[0].models (line 6): expected a list of model names (omit `models` to cover every model), got MiniMax-M2",
        "rules[0].shadow (line 8): expected true or false, got 1",
        "rules[0].limits (line 10): expected a mapping from tier name (or `all`) to limits, got a list",
        "rules[1] (line 11): expected a mapping, got just a string",
    ]),
    FixtureCase(file: "negative-limit", expected: [
        "rules[2].limits.free.requests (line 14): must be a positive integer, got -5",
    ]),
    FixtureCase(file: "zero-limit", expected: [
        "rules[0].limits.all.requests (line 8): must be a positive integer, got 0",
    ]),
    FixtureCase(file: "non-numeric-limit", expected: [
        "rules[0].limits.all.requests (line 11): must be a positive integer, got lots",
        "rules[0].limits.all.tokens (line 12): must be a positive integer, got 1.5",
        "rules[0].limits.all.concurrency (line 13): must be a positive integer, got a list",
    ]),
    FixtureCase(file: "overflowing-limit", expected: [
        "rules[0].limits.all.tokens (line 10): must be a positive integer no greater than 18446744073709551615, got 18446744073709551616",
    ]),
    FixtureCase(file: "bad-window", expected: [
        "rules[0].window (line 7): must be a duration such as 500ms, 60s, 1m, 1h or 1d, got 60",
        "rules[1].window (line 11): must be longer than 0, got 0s",
        "rules[2].window (line 15): must be at most 213503d, got 1000000d",
        "rules[3].window (line 19): must be a duration such as 500ms, 60s, 1m, 1h or 1d, got a minute",
    ]),
    FixtureCase(file: "bad-max-wait", expected: [
        "rules[0].max_wait (line 7): must be a duration such as 500ms, 60s, 1m, 1h or 1d, got 5",
        "rules[1].max_wait (line 11): must be longer than 0, got 0s",
    ]),
    FixtureCase(file: "unknown-choice", expected: [
        "rules[0].scope (line 8): unknown scope `global`; allowed values are per-model, shared",
        "rules[0].meter (line 9): unknown meter `bytes`; allowed values are tokens, characters, images, none",
        "rules[0].algorithm (line 10): unknown algorithm `leaky-bucket`; allowed values are sliding-window, gcra",
    ]),
    FixtureCase(file: "duplicate-tier", expected: [
        "tiers[1].name (line 4): duplicate tier `free` (also tiers[0].name, line 2)",
        "tiers[2].name (line 6): `all` is reserved: in `limits` it means every tier; choose another name",
    ]),
    FixtureCase(file: "thresholds-not-increasing", expected: [
        "tiers[0].recharge_threshold (line 3): the lowest tier's threshold must be 0, so that every account has a tier; got 5",
        "tiers[2].recharge_threshold (line 7): must be greater than the threshold of `paid` (100, line 5); tiers are listed lowest first",
        "tiers[3].recharge_threshold (line 9): must be a non-negative amount such as 0, 10 or 0.01, got -1",
    ]),
    FixtureCase(file: "duplicate-rule-name", expected: [
        "rules[1].name (line 11): duplicate rule name `speech` (also rules[0], line 5)",
    ]),
    FixtureCase(file: "duplicate-rule", expected: [
        "rules[1].models[1] (line 15): duplicate rule: API `text`, model `MiniMax-M2`, is already covered by rule `text-minimax-m2` (rules[0], line 7) for tier paid",
        "rules[4] (line 29): duplicate rule: API `voice-cloning`, any model, is already covered by rule `cloning` (rules[3], line 25) for tier free",
    ]),
    FixtureCase(file: "shared-key-clash", expected: [
        "rules[0].name (line 5): the shared budget of this rule is keyed `video-generation/hailuo`, the same key as the per-model budget of model `hailuo` (rules[1].models[0], line 13); rename the rule",
    ]),
    FixtureCase(file: "unknown-tier", expected: [
        "rules[0].limits.gold (line 12): unknown tier `gold`; tiers are free, paid",
    ]),
    FixtureCase(file: "no-limits", expected: [
        "rules[0].limits (line 7): a rule needs limits: give them for `all` tiers or for at least one tier by name",
        "rules[1].limits.free (line 11): set at least one of requests, tokens, concurrency",
        "rules[2] (line 12): missing required key `limits`",
    ]),
    FixtureCase(file: "all-mixed-with-tiers", expected: [
        "rules[0].limits.all (line 12): `all` cannot be combined with tier names (paid); use either `all` or one entry per tier",
    ]),
    FixtureCase(file: "bad-models", expected: [
        "rules[0].models[1] (line 7): must not be empty",
        "rules[0].models[2] (line 7): model `MiniMax-Hailuo-02` is listed twice (also rules[0].models[0])",
        "rules[0].models[3] (line 7): expected a model name, got nothing",
    ]),
    FixtureCase(file: "tokens-without-meter", expected: [
        "rules[0].limits.all.tokens (line 9): a tokens limit needs a meter: set the rule's `meter` to tokens, characters or images",
    ]),
    FixtureCase(file: "bad-burst", expected: [
        "rules[0].burst (line 7): `burst` applies only to algorithm gcra; this rule uses sliding-window",
        "rules[1].burst (line 13): must be a duration such as 500ms, 60s, 1m, 1h or 1d, got 0",
    ]),
    FixtureCase(file: "bad-reservation", expected: [
        "rules[0].default_output_reservation (line 9): 8192 is more than the tokens limit of `all` (4096): every call that does not say its output size would be refused as too large",
        "rules[1].default_output_reservation (line 16): `default_output_reservation` applies only to meter tokens; this rule's meter is characters",
    ]),
    FixtureCase(file: "duplicate-account", expected: [
        "accounts[2].id (line 13): duplicate account `acme` (also accounts[0].id, line 10)",
    ]),
    FixtureCase(file: "bad-hash", expected: [
        "accounts[0].api_key_hashes[1] (line 13): must be a SHA-256 hash, 64 hexadecimal characters; got 6 characters (abc123)",
        "accounts[0].api_key_hashes[2] (line 14): must be a SHA-256 hash, 64 hexadecimal characters; got `g` at position 64",
        "accounts[1].api_key_hashes[0] (line 16): this API key hash already belongs to account `acme` (accounts[0].api_key_hashes[0], line 12); a key identifies one account",
    ]),
    FixtureCase(file: "pinned-unknown-tier", expected: [
        "accounts[0].tier (line 13): unknown tier `gold`; tiers are free, paid",
    ]),
    FixtureCase(file: "negative-recharges", expected: [
        "accounts[0].recharges (line 11): must be a non-negative amount such as 0, 10 or 0.01, got -5",
        "accounts[1].recharges (line 13): must be a non-negative amount such as 0, 10 or 0.01, got lots",
    ]),
    FixtureCase(file: "bad-override", expected: [
        "accounts[0].overrides[0].rule (line 24): unknown rule `text-minimax-m3` (did you mean `text-minimax-m2`?); rules are text-minimax-m2, video, cloning",
        "accounts[0].overrides[1].model (line 27): model `MiniMax-M2-Stable` is not covered by rule `text-minimax-m2`; its models are MiniMax-M2",
        "accounts[0].overrides[2] (line 29): an override must set at least one of requests, tokens, concurrency",
        "accounts[0].overrides[3].model (line 31): rule `video` has one budget for all its models (scope shared), so its override cannot name a model",
        "accounts[0].overrides[4].tokens (line 34): rule `cloning` has no meter (meter none), so it has no tokens limit to override",
        "accounts[0].overrides[6] (line 38): duplicate override of rule `text-minimax-m2` for model `MiniMax-M2` (also accounts[0].overrides[5], line 35)",
    ]),
]

@Suite struct CatalogueParsingTests {
    @Test("each fixture reports exactly its problems", arguments: fixtureCases)
    func fixture(_ fixture: FixtureCase) throws {
        #expect(try problems(in: fixture.file) == fixture.expected)
    }

    @Test func everyFixtureIsCovered() throws {
        let directory = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasSuffix(".yaml") }
            .map { String($0.dropLast(5)) }
        let covered = Set(fixtureCases.map(\.file) + ["valid", "several-problems"])
        #expect(Set(files) == covered)
    }

    @Test func aFileWithSeveralProblemsReportsAllOfThem() throws {
        #expect(try problems(in: "several-problems") == [
            "rules[0].algoritm (line 12): unknown key `algoritm` (did you mean `algorithm`?); allowed keys are name, api, models, scope, meter, algorithm, window, burst, default_output_reservation, shadow, max_wait, limits",
            "rules[1].window (line 19): must be a duration such as 500ms, 60s, 1m, 1h or 1d, got 60",
            "rules[1].limits.free.requests (line 21): must be a positive integer, got -5",
            "rules[1].limits.gold (line 22): unknown tier `gold`; tiers are free, paid",
            "rules[2].limits.all.requests (line 26): must be a positive integer, got five",
            "accounts[0].api_key_hashes[0] (line 29): must be a SHA-256 hash, 64 hexadecimal characters; got 10 characters (not-a-hash)",
            "accounts[0].tier (line 30): unknown tier `platinum`; tiers are free, paid",
            "accounts[0].recharges (line 31): must be a non-negative amount such as 0, 10 or 0.01, got -1",
            "accounts[0].overrides[0].rule (line 33): unknown rule `text-minimax-m3` (did you mean `text-minimax-m2`?); rules are text-minimax-m2, text-minimax-m2-stable, video",
        ])
    }

    @Test func descriptionIsOneCompilerStyleLinePerProblem() throws {
        let text = try String(contentsOfFile: fixturePath("negative-limit"), encoding: .utf8)
        #expect(throws: ConfigErrors(source: "negative-limit.yaml", errors: [
            ConfigError(path: "rules[2].limits.free.requests", line: 14, message: "must be a positive integer, got -5"),
        ])) {
            try Catalogue.parse(yaml: text, source: "negative-limit.yaml")
        }
        let errors = ConfigErrors(source: "c.yaml", errors: [
            ConfigError(path: "", line: nil, message: "the file is empty: expected a mapping with `tiers` and `rules`"),
            ConfigError(path: "", line: 3, message: "not valid YAML: x"),
            ConfigError(path: "rules[0]", line: nil, message: "m"),
            ConfigError(path: "rules[2].limits.free.requests", line: 14, message: "must be a positive integer, got -5"),
        ])
        #expect(errors.description == """
            c.yaml: the file is empty: expected a mapping with `tiers` and `rules`
            c.yaml:3: not valid YAML: x
            c.yaml: rules[0]: m
            c.yaml:14: rules[2].limits.free.requests: must be a positive integer, got -5
            """)
        #expect(errors.errors[3].description == "rules[2].limits.free.requests (line 14): must be a positive integer, got -5")
    }

    @Test func validFileReadsEveryField() throws {
        let catalogue = try loadFixture("valid")
        #expect(catalogue.tiers.map(\.name) == ["free", "paid", "scale"])
        #expect(catalogue.tiers[2].rechargeThreshold == 1000)
        let stable = catalogue.rules[1]
        #expect(stable.limits == [
            TierLimits(tier: "free", requests: 20, tokens: 1_000_000),
            TierLimits(tier: "paid", requests: 500, tokens: 20_000_000),
            TierLimits(tier: "scale", requests: 2_000, tokens: 80_000_000),
        ])
        #expect(catalogue.rules[0] == Catalogue.builtIn.rules[0])
        #expect(catalogue.rules[2] == Rule(
            name: "video", api: "video-generation", models: ["MiniMax-Hailuo-2.3", "MiniMax-Hailuo-02"],
            scope: .shared, meter: .none, algorithm: .gcra, window: 3_600 * Nanoseconds.perSecond, burst: 120 * Nanoseconds.perSecond,
            shadow: true, limits: [TierLimits(tier: "all", requests: 100)]
        ))
        #expect(catalogue.accounts[0] == AccountProfile(
            id: "acme",
            apiKeyHashes: ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
            pinnedTier: "paid",
            recharges: 100,
            overrides: [
                Override(rule: "text-minimax-m2", requests: 100),
                Override(rule: "text-minimax-m2-stable", model: "MiniMax-M2-Stable", tokens: 50_000_000, concurrency: 4),
            ]
        ))
        #expect(try Catalogue.parse(yaml: catalogue.yaml(), source: "valid.yaml") == catalogue)
    }

    @Test func uppercaseHashesAreStoredLowercase() throws {
        let text = """
            tiers: [{ name: free, recharge_threshold: 0 }]
            rules: [{ name: r, api: a, limits: { all: { requests: 1 } } }]
            accounts: [{ id: x, api_key_hashes: [9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08] }]
            """
        let catalogue = try Catalogue.parse(yaml: text, source: "t")
        #expect(catalogue.accounts[0].apiKeyHashes == ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"])
    }

    @Test func unreadableFileIsOneError() {
        let path = "/nonexistent/weir/catalogue.yaml"
        do {
            _ = try Catalogue.load(contentsOf: path)
            Issue.record("expected an error")
        } catch {
            #expect(error.source == path)
            #expect(error.errors.count == 1)
            #expect(error.errors.first?.line == nil)
            #expect(error.errors.first?.message.hasPrefix("cannot read the file: ") == true)
        }
    }

    @Test func fileThatIsNotUTF8IsOneError() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("weir-policy-\(UUID().uuidString).yaml")
        try Data([0x74, 0x69, 0x65, 0x72, 0x73, 0x3A, 0xFF, 0xFE]).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        #expect(throws: ConfigErrors(source: url.path, errors: [ConfigError(path: "", line: nil, message: "the file is not valid UTF-8 text")])) {
            try Catalogue.load(contentsOf: url.path)
        }
    }

    @Test func documentWithOnlyAMarkerIsEmpty() {
        #expect(throws: ConfigErrors(source: "s", errors: [ConfigError(path: "", line: nil, message: "the file is empty: expected a mapping with `tiers` and `rules`")])) {
            try Catalogue.parse(yaml: "---\n", source: "s")
        }
    }

    @Test func secondDocumentIsRefused() throws {
        let text = try String(contentsOfFile: fixturePath("zero-limit"), encoding: .utf8)
            .replacingOccurrences(of: "requests: 0", with: "requests: 1") + "---\nshadow: true\n"
        #expect(throws: ConfigErrors(source: "s", errors: [ConfigError(path: "", line: 9, message: "not valid YAML for a catalogue: a second document starts here; a catalogue is one document")])) {
            try Catalogue.parse(yaml: text, source: "s")
        }
    }

    @Test func aliasesAreFollowed() throws {
        let text = """
            tiers: [{ name: free, recharge_threshold: 0 }]
            rules:
              - name: a
                api: voice-cloning
                limits: &standard { all: { requests: 60 } }
              - name: b
                api: voice-design
                limits: *standard
            """
        let catalogue = try Catalogue.parse(yaml: text, source: "t")
        #expect(catalogue.rules[1].limits == [TierLimits(tier: "all", requests: 60)])
    }

    @Test func aliasExpansionIsBounded() {
        // 3,000 accounts sharing 1,000 overrides: 3 million values from a few kilobytes.
        let override = "  - &o { rule: r, requests: 1 }\n" + String(repeating: "  - *o\n", count: 999)
        let account = "  - &a { id: x, overrides: *l }\n" + String(repeating: "  - *a\n", count: 2_999)
        let text = "tiers: [{ name: free, recharge_threshold: 0 }]\nrules: [{ name: r, api: a, limits: { all: { requests: 1 } } }]\n"
            + "overrides: &l\n" + override + "accounts:\n" + account
        do {
            _ = try Catalogue.parse(yaml: text, source: "bomb.yaml")
            Issue.record("expected an error")
        } catch {
            #expect(error.errors.count <= CatalogueReader.maxErrors + 2)
            #expect(error.errors.contains { $0.message.hasPrefix("the file expands (through aliases) to more than") })
        }
    }

    @Test("random edits of a valid file never trap, and every error points inside the file")
    func mutationsNeverTrap() throws {
        let original = try String(contentsOfFile: fixturePath("valid"), encoding: .utf8)
        let alphabet = Array("-:[]{},#&*!|>'\"%@` \n\t0123456789abcxyz_.~?")
        var random = SeededGenerator(seed: 0x5EED)
        var accepted = 0
        for _ in 0..<1_500 {
            var characters = Array(original)
            for _ in 0..<Int(random.next() % 4 + 1) {
                let position = Int(random.next() % UInt64(characters.count))
                switch random.next() % 3 {
                case 0: characters.remove(at: position)
                case 1: characters.insert(alphabet[Int(random.next() % UInt64(alphabet.count))], at: position)
                default: characters[position] = alphabet[Int(random.next() % UInt64(alphabet.count))]
                }
            }
            let text = String(characters)
            let lineCount = text.split(separator: "\n", omittingEmptySubsequences: false).count
            do {
                let catalogue = try Catalogue.parse(yaml: text, source: "m")
                accepted += 1
                #expect(try Catalogue.parse(yaml: catalogue.yaml(), source: "m") == catalogue)
            } catch {
                #expect(!error.errors.isEmpty)
                for problem in error.errors {
                    #expect((problem.line ?? 1) >= 1 && (problem.line ?? 1) <= lineCount + 1, "\(problem)")
                }
            }
        }
        #expect(accepted > 0)
    }
}
