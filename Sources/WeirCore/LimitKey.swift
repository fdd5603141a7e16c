/// The identity of one budget: an account's usage of one (API, model) or one
/// shared rule.
///
/// The key hashes its two strings once, when it is made (with the standard library's
/// seeded SipHash, so callers cannot choose colliding account ids), and keeps the
/// result: the in-memory store then picks a shard and a bucket without hashing any
/// string again. Hashing two `String`s per lookup was the largest single cost of a
/// decision when measured (see BENCHMARKS.md).
///
/// Layout: two strings and the hash, 40 bytes. Strings of up to 15 UTF-8 bytes are
/// stored inline, and `scope` strings are shared with the catalogue that produced
/// them, so a key usually owns no heap memory.
public struct LimitKey: Sendable, Hashable, CustomStringConvertible {
    /// The account the budget belongs to.
    public let account: String
    /// What the budget covers, e.g. `text/MiniMax-M2` (per model) or
    /// `video-generation/video-generation` (shared by a rule's models).
    public let scope: String
    /// `Hasher` over `account` and `scope`, computed once.
    public let fingerprint: Int

    public init(account: String, scope: String) {
        self.account = account
        self.scope = scope
        var hasher = Hasher()
        hasher.combine(account)
        hasher.combine(scope)
        self.fingerprint = hasher.finalize()
    }

    public var description: String { "\(account)|\(scope)" }

    @inlinable
    public static func == (lhs: LimitKey, rhs: LimitKey) -> Bool {
        lhs.fingerprint == rhs.fingerprint && lhs.account == rhs.account && lhs.scope == rhs.scope
    }

    @inlinable
    public func hash(into hasher: inout Hasher) {
        hasher.combine(fingerprint)
    }

    /// The hash tables' entry point, answered from the fingerprint without running
    /// `Hasher` again: the fingerprint already is a seeded SipHash of the key, and the
    /// table's per-instance seed is mixed in so iteration orders still differ.
    @inlinable
    public func _rawHashValue(seed: Int) -> Int {
        fingerprint ^ seed
    }
}
