import Foundation
import WeirCore
import Yams

/// Builds a `Catalogue` from a composed YAML document, collecting every problem with
/// its key path and line instead of stopping at the first one.
///
/// The reader walks the node tree by hand (not `Codable`, which loses line numbers)
/// and only descends where the schema expects something, so its depth is the
/// schema's. Aliases can still make a small file expand to a huge tree; `budget`
/// caps the number of values visited so such a file is refused, not read for
/// hours, and at most `maxErrors` problems are kept.
///
/// Never traps on any input.
struct CatalogueReader {
    /// The problems found so far, in the order found.
    private(set) var errors: [ConfigError] = []
    /// Values that may still be visited, and how many could be at the start.
    private var budget: Int
    private let budgetLimit: Int
    private var exhausted = false
    /// Problems beyond `maxErrors` are counted, not kept.
    private var dropped = 0
    static let maxErrors = 1_000

    // What the cross-checks need from the sections already read.
    private var tierNames: [String] = []
    private var tiersKnown = false
    private var rulesByName: [String: RuleFacts] = [:]
    private var rulesKnown = false

    init(budget: Int) {
        self.budget = budget
        self.budgetLimit = budget
    }

    static let topKeys = ["version", "shadow", "tiers", "rules", "accounts"]
    static let tierKeys = ["name", "recharge_threshold"]
    static let ruleKeys = [
        "name", "api", "models", "scope", "meter", "algorithm", "window", "burst",
        "default_output_reservation", "shadow", "max_wait", "limits",
    ]
    static let dimensionKeys = ["requests", "tokens", "concurrency"]
    static let accountKeys = ["id", "api_key_hashes", "tier", "recharges", "overrides"]
    static let overrideKeys = ["rule", "model", "requests", "tokens", "concurrency"]

    /// The catalogue format version this reader understands.
    static let version: UInt64 = 1

    // MARK: - Document

    /// Reads the whole document; nil when any problem was found (see `errors`).
    mutating func read(_ root: Node) -> Catalogue? {
        guard let top = fields(
            root, path: "", keyLine: nil, expected: "a mapping with `tiers` and `rules` at the top level",
            allowed: Self.topKeys, required: ["tiers", "rules"]
        ) else { return nil }

        if let field = top["version"], let version = positiveInteger(field), version != Self.version {
            report(field, "unsupported version \(version); this Weir reads version \(Self.version)")
        }
        let shadow = top["shadow"].flatMap { bool($0) } ?? false
        // Sections are read in dependency order, whatever their order in the file.
        let tiers = top["tiers"].map { readTiers($0) } ?? []
        let rules = top["rules"].map { readRules($0) } ?? []
        let accounts = top["accounts"].map { readAccounts($0) } ?? []

        if exhausted {
            errors.append(ConfigError(
                path: "", line: nil,
                message: "the file expands (through aliases) to more than \(budgetLimit) values; stopped reading"
            ))
        }
        if dropped > 0 {
            errors.append(ConfigError(path: "", line: nil, message: "\(dropped) more problem\(dropped == 1 ? "" : "s") not shown"))
        }
        guard errors.isEmpty else { return nil }
        return Catalogue(tiers: tiers, rules: rules, accounts: accounts, shadow: shadow)
    }

    // MARK: - Tiers

    private mutating func readTiers(_ field: Field) -> [Tier] {
        guard let items = listItems(field, expected: "a list of tiers") else { return [] }
        tiersKnown = true
        if items.isEmpty {
            report(field, "at least one tier is required")
        }
        var tiers: [Tier] = []
        var seen: [String: Field] = [:]
        var previous: (threshold: Decimal, field: Field, name: String?)?
        for (index, item) in items.enumerated() {
            guard let entry = fields(item, allowed: Self.tierKeys, required: Self.tierKeys) else { continue }
            var name: String?
            if let nameField = entry["name"], let value = string(nameField) {
                if value == TierLimits.allTiers {
                    report(nameField, "`all` is reserved: in `limits` it means every tier; choose another name")
                } else if let first = seen[value] {
                    report(nameField, "duplicate tier `\(value)` (also \(first.path), line \(first.lineText))")
                } else {
                    seen[value] = nameField
                    tierNames.append(value)
                    name = value
                }
            }
            var threshold: Decimal?
            if let thresholdField = entry["recharge_threshold"], let value = amount(thresholdField) {
                threshold = value
                if index == 0 && value != 0 {
                    report(thresholdField, "the lowest tier's threshold must be 0, so that every account has a tier; got \(ScalarSyntax.format(amount: value))")
                } else if let previous, value <= previous.threshold {
                    let previousName = previous.name.map { "`\($0)`" } ?? "the tier before"
                    report(thresholdField, "must be greater than the threshold of \(previousName) (\(ScalarSyntax.format(amount: previous.threshold)), line \(previous.field.lineText)); tiers are listed lowest first")
                }
                previous = (value, thresholdField, name)
            }
            tiers.append(Tier(name: name ?? "", rechargeThreshold: threshold ?? 0))
        }
        return tiers
    }

    /// "unknown tier `gold`; tiers are free, paid".
    private func unknownTier(_ name: String) -> String {
        tierNames.isEmpty
            ? "unknown tier `\(name)`; no tiers are defined"
            : "unknown tier `\(name)`; tiers are \(tierNames.joined(separator: ", "))"
    }

    // MARK: - Rules

    /// The tiers a rule has limits for.
    private enum Coverage {
        case all
        case tiers([String])
    }

    /// What later checks need to know about a rule.
    private struct RuleFacts {
        var path: String
        var line: Int?
        var name: String?
        var api: String?
        /// The models listed, with where; empty for a rule covering every model.
        var models: [(name: String, field: Field)] = []
        var modelsValid = true
        /// The tiers the limits cover; nil when the limits are invalid.
        var coverage: Coverage?
        var scope: Scope = .perModel
        var meter: Meter = .none
    }

    private mutating func readRules(_ field: Field) -> [Rule] {
        guard let items = listItems(field, expected: "a list of rules") else { return [] }
        rulesKnown = true
        if items.isEmpty {
            report(field, "at least one rule is required")
        }
        var rules: [Rule] = []
        var facts: [RuleFacts] = []
        for item in items {
            guard let entry = fields(item, allowed: Self.ruleKeys, required: ["name", "api", "limits"]) else { continue }
            var rule = Rule(name: "", api: "", limits: [])
            var fact = RuleFacts(path: item.path, line: entry.line)

            if let nameField = entry["name"], let name = string(nameField) {
                if let first = rulesByName[name] {
                    report(nameField, "duplicate rule name `\(name)` (also \(first.path), line \(first.line.map(String.init) ?? "?"))")
                } else {
                    fact.name = name
                }
                rule.name = name
            }
            if let apiField = entry["api"], let api = string(apiField) {
                rule.api = api
                fact.api = api
            }
            if let modelsField = entry["models"] {
                if let models = listItems(modelsField, expected: "a list of model names (omit `models` to cover every model)") {
                    var seen: [String: Field] = [:]
                    for modelField in models {
                        guard let model = string(modelField, expected: "a model name") else {
                            fact.modelsValid = false
                            continue
                        }
                        if let first = seen[model] {
                            report(modelField, "model `\(model)` is listed twice (also \(first.path))")
                            continue
                        }
                        seen[model] = modelField
                        rule.models.append(model)
                        fact.models.append((model, modelField))
                    }
                } else {
                    fact.modelsValid = false
                }
            }
            if let scopeField = entry["scope"], let scope: Scope = choice(scopeField, what: "scope") {
                rule.scope = scope
            }
            fact.scope = rule.scope
            let meterField = entry["meter"]
            var meterValid = true
            if let meterField {
                if let meter: Meter = choice(meterField, what: "meter") {
                    rule.meter = meter
                } else {
                    meterValid = false
                }
            }
            fact.meter = rule.meter
            var algorithmValid = true
            if let algorithmField = entry["algorithm"] {
                if let algorithm: Algorithm = choice(algorithmField, what: "algorithm") {
                    rule.algorithm = algorithm
                } else {
                    algorithmValid = false
                }
            }
            if let windowField = entry["window"], let window = duration(windowField) {
                rule.window = window
            }
            if let burstField = entry["burst"], let burst = duration(burstField) {
                if algorithmValid && rule.algorithm != .gcra {
                    report(burstField, "`burst` applies only to algorithm gcra; this rule uses \(rule.algorithm.rawValue)")
                }
                rule.burst = burst
            }
            let reservationField = entry["default_output_reservation"]
            if let reservationField, let reservation = positiveInteger(reservationField) {
                if meterValid && rule.meter != .tokens {
                    report(reservationField, "`default_output_reservation` applies only to meter tokens; this rule's meter is \(rule.meter.rawValue)")
                }
                rule.defaultOutputReservation = reservation
            }
            if let shadowField = entry["shadow"], let shadow = bool(shadowField) {
                rule.shadow = shadow
            }
            if let maxWaitField = entry["max_wait"], let maxWait = duration(maxWaitField) {
                rule.maxWait = maxWait
            }
            if let limitsField = entry["limits"] {
                let checkMeter = meterValid
                if let (limits, coverage) = readLimits(limitsField, rule: rule, checkMeter: checkMeter) {
                    rule.limits = limits
                    fact.coverage = coverage
                    if let reservationField, let reservation = rule.defaultOutputReservation {
                        checkReservation(reservation, field: reservationField, rule: rule)
                    }
                }
            }
            if let name = fact.name {
                rulesByName[name] = fact
            }
            facts.append(fact)
            rules.append(rule)
        }
        checkOverlaps(facts)
        return rules
    }

    /// Reads a rule's `limits`: a mapping from tier name (or `all`) to dimensions.
    /// Returns the limits and the tiers they cover, or nil when invalid.
    private mutating func readLimits(_ field: Field, rule: Rule, checkMeter: Bool) -> ([TierLimits], Coverage)? {
        guard let entries = entries(field.value, path: field.path, keyLine: field.keyLine, expected: "a mapping from tier name (or `all`) to limits") else {
            return nil
        }
        if entries.isEmpty {
            report(field, "a rule needs limits: give them for `all` tiers or for at least one tier by name")
            return nil
        }
        var valid = true
        var limits: [TierLimits] = []
        var allField: Field?
        var named: [String] = []
        for entry in entries {
            if entry.name == TierLimits.allTiers {
                allField = entry
            } else if tiersKnown && !tierNames.contains(entry.name) {
                let message = unknownTier(entry.name)
                report(entry.path, entry.keyLine, message)
                valid = false
            } else {
                named.append(entry.name)
            }
            guard let dimensions = fields(entry, allowed: Self.dimensionKeys, required: []) else {
                valid = false
                continue
            }
            guard let (requests, tokens, concurrency) = readDimensions(dimensions) else {
                valid = false
                continue
            }
            if let tokensField = dimensions["tokens"], checkMeter && rule.meter == .none {
                report(tokensField, "a tokens limit needs a meter: set the rule's `meter` to tokens, characters or images")
                valid = false
            }
            limits.append(TierLimits(tier: entry.name, requests: requests, tokens: tokens, concurrency: concurrency))
        }
        if let allField, !named.isEmpty {
            report(allField.path, allField.keyLine, "`all` cannot be combined with tier names (\(named.joined(separator: ", "))); use either `all` or one entry per tier")
            valid = false
        }
        guard valid else { return nil }
        return (limits, allField == nil ? .tiers(named) : .all)
    }

    /// Reads `requests`, `tokens`, `concurrency` (at least one); nil when any is invalid.
    private mutating func readDimensions(_ dimensions: Fields) -> (UInt64?, UInt64?, UInt64?)? {
        if dimensions.isEmpty {
            report(dimensions.path, dimensions.line, "set at least one of requests, tokens, concurrency")
            return nil
        }
        var valid = true
        var values: [UInt64?] = []
        for name in Self.dimensionKeys {
            guard let field = dimensions[name] else {
                values.append(nil)
                continue
            }
            let value = positiveInteger(field)
            valid = valid && value != nil
            values.append(value)
        }
        return valid ? (values[0], values[1], values[2]) : nil
    }

    /// A default output reservation above a tokens limit makes every call that relies
    /// on it too large.
    private mutating func checkReservation(_ reservation: UInt64, field: Field, rule: Rule) {
        for entry in rule.limits {
            guard let tokens = entry.tokens else { continue }
            let capacity = rule.burstUnits(forLimit: tokens) ?? tokens
            if reservation > capacity {
                report(field, "\(reservation) is more than the tokens limit of `\(entry.tier)` (\(capacity)): every call that does not say its output size would be refused as too large")
                return
            }
        }
    }

    /// Two rules covering the same (API, model) for a common tier: the second is a
    /// duplicate. A rule listing a model is not a duplicate of one listing none (it
    /// takes precedence).
    private mutating func checkOverlaps(_ facts: [RuleFacts]) {
        struct Claim {
            var fact: RuleFacts
            var coverage: Coverage
        }
        var claims: [String: [Claim]] = [:]
        for fact in facts {
            guard let api = fact.api, fact.modelsValid, let coverage = fact.coverage else { continue }
            let targets: [(key: String, what: String, path: String, line: Int?)] = fact.models.isEmpty
                ? [("\(api)\u{0}*", "API `\(api)`, any model,", fact.path, fact.line)]
                : fact.models.map { ("\(api)\u{0}=\($0.name)", "API `\(api)`, model `\($0.name)`,", $0.field.path, $0.field.line) }
            for target in targets {
                let earlier = claims[target.key] ?? []
                if let (claim, common) = earlier.lazy.compactMap({ claim in Self.common(claim.coverage, coverage).map { (claim, $0) } }).first {
                    let scope = switch common {
                    case .all: "every tier"
                    case .tiers(let tiers): tiers.count == 1 ? "tier \(tiers[0])" : "tiers \(tiers.joined(separator: ", "))"
                    }
                    let other = claim.fact.name.map { "rule `\($0)`" } ?? "a rule"
                    report(target.path, target.line, "duplicate rule: \(target.what) is already covered by \(other) (\(claim.fact.path), line \(claim.fact.line.map(String.init) ?? "?")) for \(scope)")
                    continue
                }
                claims[target.key, default: []].append(Claim(fact: fact, coverage: coverage))
            }
        }
        checkSharedKeys(facts)
    }

    /// A shared rule's budget is keyed `<api>/<rule name>`, a per-model budget
    /// `<api>/<model>`: a shared rule named like a model listed for the same API would
    /// silently share that model's budget.
    private mutating func checkSharedKeys(_ facts: [RuleFacts]) {
        var listed: [String: (name: String, field: Field)] = [:]
        for fact in facts where fact.scope == .perModel {
            guard let api = fact.api else { continue }
            for model in fact.models where listed[api + "\u{0}" + model.name] == nil {
                listed[api + "\u{0}" + model.name] = model
            }
        }
        for fact in facts where fact.scope == .shared {
            guard let api = fact.api, let name = fact.name, let model = listed[api + "\u{0}" + name] else { continue }
            report(fact.path + ".name", fact.line, "the shared budget of this rule is keyed `\(api)/\(name)`, the same key as the per-model budget of model `\(model.name)` (\(model.field.path), line \(model.field.lineText)); rename the rule")
        }
    }

    /// The tiers two coverages share, or nil when they share none.
    private static func common(_ a: Coverage, _ b: Coverage) -> Coverage? {
        switch (a, b) {
        case (.all, .all): return .all
        case (.all, .tiers(let tiers)), (.tiers(let tiers), .all): return .tiers(tiers)
        case (.tiers(let a), .tiers(let b)):
            let shared = b.filter(a.contains)
            return shared.isEmpty ? nil : .tiers(shared)
        }
    }

    // MARK: - Accounts

    private mutating func readAccounts(_ field: Field) -> [AccountProfile] {
        guard let items = listItems(field, expected: "a list of accounts") else { return [] }
        var accounts: [AccountProfile] = []
        var ids: [String: Field] = [:]
        var hashes: [String: (account: String, field: Field)] = [:]
        for item in items {
            guard let entry = fields(item, allowed: Self.accountKeys, required: ["id"]) else { continue }
            var account = AccountProfile(id: "")
            if let idField = entry["id"], let id = string(idField) {
                if let first = ids[id] {
                    report(idField, "duplicate account `\(id)` (also \(first.path), line \(first.lineText))")
                } else {
                    ids[id] = idField
                }
                account.id = id
            }
            if let hashesField = entry["api_key_hashes"], let hashFields = listItems(hashesField, expected: "a list of SHA-256 hashes") {
                for hashField in hashFields {
                    guard let text = string(hashField, expected: "a SHA-256 hash") else { continue }
                    let hash = text.lowercased()
                    if let problem = Self.hashProblem(hash) {
                        report(hashField, "must be a SHA-256 hash, 64 hexadecimal characters; \(problem)")
                        continue
                    }
                    if let first = hashes[hash] {
                        report(hashField, "this API key hash already belongs to account `\(first.account)` (\(first.field.path), line \(first.field.lineText)); a key identifies one account")
                        continue
                    }
                    hashes[hash] = (account.id, hashField)
                    account.apiKeyHashes.append(hash)
                }
            }
            if let tierField = entry["tier"], let tier = string(tierField, expected: "a tier name") {
                if tiersKnown && !tierNames.contains(tier) {
                    let message = unknownTier(tier)
                    report(tierField, message)
                }
                account.pinnedTier = tier
            }
            if let rechargesField = entry["recharges"], let recharges = amount(rechargesField) {
                account.recharges = recharges
            }
            if let overridesField = entry["overrides"], let overrideFields = listItems(overridesField, expected: "a list of overrides") {
                var seen: [String: Field] = [:]
                for overrideField in overrideFields {
                    guard let override = readOverride(overrideField) else { continue }
                    let key = override.rule + "\u{0}" + (override.model ?? "")
                    if let first = seen[key] {
                        let models = override.model.map { "model `\($0)`" } ?? "every model"
                        report(overrideField, "duplicate override of rule `\(override.rule)` for \(models) (also \(first.path), line \(first.lineText))")
                        continue
                    }
                    seen[key] = overrideField
                    account.overrides.append(override)
                }
            }
            accounts.append(account)
        }
        return accounts
    }

    /// What keeps `hash` (lowercased) from being 64 hexadecimal characters, or nil.
    private static func hashProblem(_ hash: String) -> String? {
        let characters = Array(hash.unicodeScalars)
        if characters.count != 64 {
            return "got \(characters.count) character\(characters.count == 1 ? "" : "s") (\(ScalarSyntax.shown(hash)))"
        }
        if let position = characters.firstIndex(where: { !$0.isASCII || !isHexDigit(UInt8($0.value)) }) {
            return "got `\(characters[position])` at position \(position + 1)"
        }
        return nil
    }

    private static func isHexDigit(_ character: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(character) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(character)
    }

    private mutating func readOverride(_ item: Field) -> Override? {
        guard let entry = fields(item, allowed: Self.overrideKeys, required: ["rule"]) else { return nil }
        var valid = true
        var override = Override(rule: "")
        var facts: RuleFacts?
        if let ruleField = entry["rule"], let name = string(ruleField, expected: "a rule name") {
            override.rule = name
            if let known = rulesByName[name] {
                facts = known
            } else if rulesKnown {
                let names = rulesByName.values.sorted { $0.path.count != $1.path.count ? $0.path.count < $1.path.count : $0.path < $1.path }
                    .compactMap(\.name)
                let suggestion = Self.closest(to: name, in: names).map { " (did you mean `\($0)`?)" } ?? ""
                report(ruleField, "unknown rule `\(name)`\(suggestion); rules are \(names.joined(separator: ", "))")
                valid = false
            }
        } else {
            valid = false
        }
        if let modelField = entry["model"], let model = string(modelField, expected: "a model name") {
            override.model = model
            if let facts, facts.modelsValid {
                if facts.scope == .shared {
                    report(modelField, "rule `\(override.rule)` has one budget for all its models (scope shared), so its override cannot name a model")
                    valid = false
                } else if !facts.models.isEmpty && !facts.models.contains(where: { $0.name == model }) {
                    report(modelField, "model `\(model)` is not covered by rule `\(override.rule)`; its models are \(facts.models.map(\.name).joined(separator: ", "))")
                    valid = false
                }
            }
        }
        let dimensions = Fields(path: entry.path, line: entry.line, entries: entry.entries.filter { Self.dimensionKeys.contains($0.name) })
        if dimensions.isEmpty {
            report(entry.path, entry.line, "an override must set at least one of requests, tokens, concurrency")
            return nil
        }
        guard let (requests, tokens, concurrency) = readDimensions(dimensions) else { return nil }
        if let tokensField = dimensions["tokens"], let facts, facts.meter == .none {
            report(tokensField, "rule `\(override.rule)` has no meter (meter none), so it has no tokens limit to override")
            valid = false
        }
        override.requests = requests
        override.tokens = tokens
        override.concurrency = concurrency
        return valid ? override : nil
    }

    // MARK: - Nodes

    /// A value in the document, with the key path and line to report problems at.
    struct Field {
        /// The key (empty for a list item).
        var name: String
        var path: String
        /// The line of the key (of the item, for a list item).
        var keyLine: Int?
        var value: Node

        /// The line of the value, or of its key when the value is empty.
        var line: Int? { value.isNull ? keyLine : value.mark?.line ?? keyLine }
        var lineText: String { line.map(String.init) ?? "?" }
    }

    /// The entries of one mapping, in file order.
    struct Fields {
        var path: String
        /// The line the mapping starts on.
        var line: Int?
        var entries: [Field] = []

        var isEmpty: Bool { entries.isEmpty }

        subscript(name: String) -> Field? {
            entries.first { $0.name == name }
        }
    }

    /// Spends one unit of the visit budget; false once it is exhausted.
    private mutating func spend() -> Bool {
        guard budget > 0 else {
            exhausted = true
            return false
        }
        budget -= 1
        return true
    }

    /// Records a problem; the message is only built while under `maxErrors`.
    private mutating func report(_ path: String, _ line: Int?, _ message: @autoclosure () -> String) {
        guard errors.count < Self.maxErrors else {
            dropped += 1
            return
        }
        errors.append(ConfigError(path: path, line: line, message: message()))
    }

    private mutating func report(_ field: Field, _ message: @autoclosure () -> String) {
        report(field.path, field.line, message())
    }

    /// The entries of a mapping with names for keys; reports anything else.
    private mutating func entries(_ node: Node, path: String, keyLine: Int?, expected: String) -> [Field]? {
        guard case .mapping(let mapping) = node else {
            report(path, node.isNull ? keyLine : node.mark?.line ?? keyLine, "expected \(expected), got \(Self.describe(node))")
            return nil
        }
        var entries: [Field] = []
        var seen: Set<String> = []
        for (key, value) in mapping {
            guard spend() else { break }
            guard case .scalar(let scalar) = key, !key.isNull else {
                report(path, key.mark?.line ?? keyLine, "keys must be names, got \(Self.describe(key))")
                continue
            }
            let name = scalar.string
            let field = Field(name: name, path: path.isEmpty ? name : path + "." + name, keyLine: key.mark?.line, value: value)
            guard seen.insert(name).inserted else {
                report(field.path, field.keyLine, "duplicate key `\(ScalarSyntax.shown(name))`: a key may appear only once in a mapping")
                continue
            }
            entries.append(field)
        }
        return entries
    }

    /// The entries of a mapping with a fixed set of keys; reports unknown keys and
    /// missing required keys.
    private mutating func fields(
        _ node: Node, path: String, keyLine: Int?, expected: String = "a mapping",
        allowed: [String], required: [String]
    ) -> Fields? {
        guard let entries = entries(node, path: path, keyLine: keyLine, expected: expected) else { return nil }
        var fields = Fields(path: path, line: node.mark?.line ?? keyLine)
        for entry in entries {
            if allowed.contains(entry.name) {
                fields.entries.append(entry)
            } else {
                let suggestion = Self.closest(to: entry.name, in: allowed).map { " (did you mean `\($0)`?)" } ?? ""
                report(entry.path, entry.keyLine, "unknown key `\(ScalarSyntax.shown(entry.name))`\(suggestion); allowed keys are \(allowed.joined(separator: ", "))")
            }
        }
        for name in required where fields[name] == nil {
            if path.isEmpty {
                report(path, nil, "missing required top-level key `\(name)`")
            } else {
                report(path, fields.line, "missing required key `\(name)`")
            }
        }
        return fields
    }

    private mutating func fields(_ field: Field, allowed: [String], required: [String]) -> Fields? {
        fields(field.value, path: field.path, keyLine: field.line, allowed: allowed, required: required)
    }

    /// The items of a list.
    private mutating func listItems(_ field: Field, expected: String) -> [Field]? {
        guard case .sequence(let sequence) = field.value else {
            report(field, "expected \(expected), got \(Self.describe(field.value))")
            return nil
        }
        var items: [Field] = []
        for (index, node) in sequence.enumerated() {
            guard spend() else { break }
            items.append(Field(name: "", path: "\(field.path)[\(index)]", keyLine: node.mark?.line ?? field.line, value: node))
        }
        return items
    }

    /// A non-empty string (any scalar but an empty one).
    private mutating func string(_ field: Field, expected: String = "a string") -> String? {
        guard case .scalar(let scalar) = field.value, !field.value.isNull else {
            report(field, "expected \(expected), got \(Self.describe(field.value))")
            return nil
        }
        guard !scalar.string.isEmpty else {
            report(field, "must not be empty")
            return nil
        }
        return scalar.string
    }

    private mutating func positiveInteger(_ field: Field) -> UInt64? {
        guard let text = scalarText(field, expected: "a positive integer") else { return nil }
        switch ScalarSyntax.integer(text) {
        case .value(let value) where value > 0:
            return value
        case .overflow:
            report(field, "must be a positive integer no greater than \(UInt64.max), got \(ScalarSyntax.shown(text))")
        case .value, .negative, .notInteger:
            report(field, "must be a positive integer, got \(ScalarSyntax.shown(text))")
        }
        return nil
    }

    private mutating func amount(_ field: Field) -> Decimal? {
        guard let text = scalarText(field, expected: "a non-negative amount") else { return nil }
        switch ScalarSyntax.amount(text) {
        case .value(let value):
            return value
        case .negative, .notNumber:
            report(field, "must be a non-negative amount such as 0, 10 or 0.01, got \(ScalarSyntax.shown(text))")
            return nil
        }
    }

    private mutating func duration(_ field: Field) -> UInt64? {
        guard let text = scalarText(field, expected: "a duration") else { return nil }
        switch ScalarSyntax.duration(text) {
        case .value(let value):
            return value
        case .zero:
            report(field, "must be longer than 0, got \(ScalarSyntax.shown(text))")
        case .overflow:
            report(field, "must be at most \(ScalarSyntax.longestDuration), got \(ScalarSyntax.shown(text))")
        case .notDuration:
            report(field, "must be a duration such as 500ms, 60s, 1m, 1h or 1d, got \(ScalarSyntax.shown(text))")
        }
        return nil
    }

    private mutating func bool(_ field: Field) -> Bool? {
        guard let text = scalarText(field, expected: "true or false") else { return nil }
        switch text.lowercased() {
        case "true": return true
        case "false": return false
        default:
            report(field, "expected true or false, got \(ScalarSyntax.shown(text))")
            return nil
        }
    }

    private mutating func choice<Choice: RawRepresentable & CaseIterable>(_ field: Field, what: String) -> Choice? where Choice.RawValue == String {
        let allowed = Choice.allCases.map(\.rawValue).joined(separator: ", ")
        guard let text = scalarText(field, expected: "one of \(allowed)") else { return nil }
        guard let value = Choice(rawValue: text) else {
            report(field, "unknown \(what) `\(ScalarSyntax.shown(text))`; allowed values are \(allowed)")
            return nil
        }
        return value
    }

    /// The text of a non-empty scalar, or a report "must be <expected>, got ...".
    private mutating func scalarText(_ field: Field, expected: String) -> String? {
        guard case .scalar(let scalar) = field.value, !field.value.isNull else {
            report(field, "must be \(expected), got \(Self.describe(field.value))")
            return nil
        }
        return scalar.string
    }

    /// How a node is named in a message: a scalar's text, else its kind.
    static func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar): node.isNull ? "nothing" : scalar.string.isEmpty ? "an empty string" : ScalarSyntax.shown(scalar.string)
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }

    /// The candidate within edit distance 2 (and under half the length) of `name`.
    static func closest(to name: String, in candidates: [String]) -> String? {
        let limit = min(2, max(1, name.count / 2))
        return candidates
            .map { ($0, editDistance(name.lowercased(), $0.lowercased())) }
            .filter { $0.1 <= limit }
            .min { $0.1 < $1.1 }?.0
    }

    private static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.unicodeScalars), b = Array(b.unicodeScalars)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        var current = previous
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}

extension Node {
    /// True for an empty value: nothing after the colon, or an unquoted `~` / `null`
    /// (or anything tagged `!!null`). Decided without running Yams' regex-based tag
    /// resolver, which would cost more than the rest of the walk.
    var isNull: Bool {
        guard case .scalar(let scalar) = self else { return false }
        switch scalar.tag.description {
        case Tag.Name.implicit.rawValue:
            return scalar.style == .plain && Self.nullWords.contains(scalar.string)
        case Tag.Name.null.rawValue:
            return true
        default:
            return false
        }
    }

    private static let nullWords: Set<String> = ["", "~", "null", "Null", "NULL"]
}
