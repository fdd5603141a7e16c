/// The identity of one budget: an account's usage of one (API, model) or one
/// shared rule.
///
/// Two strings and nothing else, so an idle key in the in-memory store stays
/// small: strings of up to 15 UTF-8 bytes are stored inline, and `scope` strings
/// are shared with the catalogue that produced them.
public struct LimitKey: Sendable, Hashable, CustomStringConvertible {
    /// The account the budget belongs to.
    public var account: String
    /// What the budget covers, e.g. `text/MiniMax-M2` (per model) or
    /// `video-generation/*` (shared by a rule's models).
    public var scope: String

    public init(account: String, scope: String) {
        self.account = account
        self.scope = scope
    }

    public var description: String { "\(account)|\(scope)" }
}
