import Foundation

/// What the catalogue needs to know about an account to resolve its limits.
public struct AccountProfile: Sendable, Equatable {
    /// The account's identifier; it is the `account` of every limit key of the account.
    public var id: String
    /// SHA-256 hashes of the account's API keys, as 64 lowercase hexadecimal characters.
    public var apiKeyHashes: [String]
    /// A tier the operator pinned the account to, overriding its recharges; nil for none.
    public var pinnedTier: String?
    /// Cumulative recharges, in the platform's currency. Never negative.
    public var recharges: Decimal
    /// Per-account replacements of rule limits.
    public var overrides: [Override]

    public init(id: String, apiKeyHashes: [String] = [], pinnedTier: String? = nil, recharges: Decimal = 0, overrides: [Override] = []) {
        self.id = id
        self.apiKeyHashes = apiKeyHashes
        self.pinnedTier = pinnedTier
        self.recharges = recharges
        self.overrides = overrides
    }
}
