import WeirCore

/// A decision together with what it was decided against.
public struct LimitedDecision: Sendable {
    public var decision: Decision
    public var resolution: Resolution
    /// The units the call asked for.
    public var units: UInt64
    /// The model the call named (the key's scope may name the rule instead).
    public var model: String

    public init(decision: Decision, resolution: Resolution, units: UInt64, model: String = "") {
        self.decision = decision
        self.resolution = resolution
        self.units = units
        self.model = model
    }

    /// Whether the caller must be refused (a denial outside shadow mode).
    public var isDenied: Bool { !decision.isAllowed }
}

/// A settlement, with the limits it was taken under.
public struct SettledLease: Sendable {
    public var settlement: Settlement

    /// The limits the lease was taken under (their windows go into `RateLimit-Policy`).
    public var windows: LimitSet { settlement.limitSet }

    public init(settlement: Settlement) {
        self.settlement = settlement
    }
}
