import Foundation

/// A tier of accounts, such as `free` or `paid`.
///
/// Tiers are ordered in a catalogue, lowest first. An account belongs to the highest
/// tier whose `rechargeThreshold` its cumulative recharges meet, unless an operator
/// pins it to a tier.
public struct Tier: Sendable, Equatable {
    /// The tier's name, unique in its catalogue; rules name it in their limits.
    /// `all` is reserved (it means every tier).
    public var name: String
    /// The cumulative recharges (in the platform's currency) an account needs to be in
    /// this tier. The lowest tier's threshold is 0, so every account has a tier.
    public var rechargeThreshold: Decimal

    public init(name: String, rechargeThreshold: Decimal) {
        self.name = name
        self.rechargeThreshold = rechargeThreshold
    }
}
