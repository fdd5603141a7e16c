import Foundation

extension Catalogue {
    /// The catalogue as canonical YAML: every field written out (defaults included),
    /// in a fixed order, with comments explaining each one, so the output is a
    /// starting point a user can copy and edit.
    ///
    /// Guarantee: `Catalogue.parse(yaml: catalogue.yaml(), source:)` equals
    /// `catalogue` for every catalogue that `parse` accepts (any name is quoted as
    /// needed).
    public func yaml() -> String {
        var out = """
            # Weir rate-limit catalogue.
            #
            # Figures are per account, per window of the rule (60s unless it says
            # otherwise). Check a change with `weir check-config FILE` before deploying.

            # Format version of this file.
            version: \(CatalogueReader.version)

            # Global shadow mode: when true, every limit is checked, counted and
            # reported, but no call is ever refused.
            shadow: \(shadow)

            # Tiers, lowest first. An account is in the highest tier whose
            # recharge_threshold its cumulative recharges meet (an account may pin a
            # tier instead). The first threshold is 0, so every account has a tier.
            #   name                unique; `all` is reserved
            #   recharge_threshold  cumulative recharges, in the platform's currency

            """
        out += "tiers:\n"
        for tier in tiers {
            out += "  - name: \(ScalarSyntax.quoted(tier.name))\n"
            out += "    recharge_threshold: \(ScalarSyntax.format(amount: tier.rechargeThreshold))\n"
        }
        out += """

            # Rules: the limits of an API's models, per tier.
            #   name       unique; overrides name it, shared budgets are keyed by it
            #   api        text, t2a, voice-cloning, video-generation, ...
            #   models     the models covered; leave out to cover every model of the api
            #              (a rule listing a model wins over one listing none)
            #   scope      per-model: each model has its own budget
            #              shared: the rule's models draw on one budget
            #   meter      what `tokens` counts: tokens (input + output), characters
            #              (of input text), images (requested), none (no tokens limit)
            #   algorithm  sliding-window: in ANY window the admitted cost never
            #              exceeds the limit (exact log per account)
            #              gcra: token bucket, continuous refill, one timestamp of state
            #   window     length of the window: 500ms, 60s, 1m, 1h, 1d (default 60s)
            #   burst      gcra only: how much of the rate a full bucket holds, as a
            #              duration: each limit's bucket holds limit x burst / window
            #              units (default: the window, i.e. each limit)
            #   default_output_reservation
            #              meter tokens only: output tokens reserved when a call does
            #              not say (no max_tokens); settled to the real usage later
            #   shadow     true: report but never refuse calls of this rule
            #   max_wait   how long a call waits for room instead of a 429 when its
            #              caller does not say (max_wait_ms): 500ms, 5s (default: no wait)
            #   limits     per tier name, or `all` for every tier (not both):
            #              requests and tokens per window, concurrency in calls at once

            """
        out += "rules:\n"
        for rule in rules {
            out += "  - name: \(ScalarSyntax.quoted(rule.name))\n"
            out += "    api: \(ScalarSyntax.quoted(rule.api))\n"
            if !rule.models.isEmpty {
                out += "    models: [\(rule.models.map(ScalarSyntax.quoted).joined(separator: ", "))]\n"
            }
            out += "    scope: \(rule.scope.rawValue)\n"
            out += "    meter: \(rule.meter.rawValue)\n"
            out += "    algorithm: \(rule.algorithm.rawValue)\n"
            out += "    window: \(ScalarSyntax.format(duration: rule.window))\n"
            if let burst = rule.burst {
                out += "    burst: \(ScalarSyntax.format(duration: burst))\n"
            }
            if let reservation = rule.defaultOutputReservation {
                out += "    default_output_reservation: \(reservation)\n"
            }
            out += "    shadow: \(rule.shadow)\n"
            if let maxWait = rule.maxWait {
                out += "    max_wait: \(ScalarSyntax.format(duration: maxWait))\n"
            }
            out += "    limits:\n"
            for entry in rule.limits {
                out += "      \(ScalarSyntax.quoted(entry.tier)): \(Self.flow(requests: entry.requests, tokens: entry.tokens, concurrency: entry.concurrency))\n"
            }
        }
        out += """

            # Accounts known to this file (the account registry may hold more).
            #   id              the account's identifier
            #   api_key_hashes  SHA-256 of each API key, 64 lowercase hex characters
            #   tier            pin the account to a tier, whatever its recharges
            #   recharges       cumulative recharges, in the platform's currency
            #   overrides       a custom contract: replace some limits of one rule
            #                   (of one `model` of it, or of all its models)
            # Example:
            #   - id: acme
            #     api_key_hashes: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]
            #     tier: paid
            #     recharges: 100
            #     overrides:
            #       - rule: text-minimax-m2
            #         requests: 100

            """
        if accounts.isEmpty {
            out += "accounts: []\n"
            return out
        }
        out += "accounts:\n"
        for account in accounts {
            out += "  - id: \(ScalarSyntax.quoted(account.id))\n"
            if !account.apiKeyHashes.isEmpty {
                out += "    api_key_hashes: [\(account.apiKeyHashes.map(ScalarSyntax.quoted).joined(separator: ", "))]\n"
            }
            if let tier = account.pinnedTier {
                out += "    tier: \(ScalarSyntax.quoted(tier))\n"
            }
            out += "    recharges: \(ScalarSyntax.format(amount: account.recharges))\n"
            if !account.overrides.isEmpty {
                out += "    overrides:\n"
                for override in account.overrides {
                    out += "      - rule: \(ScalarSyntax.quoted(override.rule))\n"
                    if let model = override.model {
                        out += "        model: \(ScalarSyntax.quoted(model))\n"
                    }
                    for (key, value) in [("requests", override.requests), ("tokens", override.tokens), ("concurrency", override.concurrency)] {
                        if let value { out += "        \(key): \(value)\n" }
                    }
                }
            }
        }
        return out
    }

    /// `{ requests: 20, tokens: 1000000 }`.
    private static func flow(requests: UInt64?, tokens: UInt64?, concurrency: UInt64?) -> String {
        let parts = [("requests", requests), ("tokens", tokens), ("concurrency", concurrency)]
            .compactMap { key, value in value.map { "\(key): \($0)" } }
        return "{ " + parts.joined(separator: ", ") + " }"
    }
}
