/// The identity of a lease: opaque to callers, unique within the store that
/// issued it, and printable as a short string (`LeaseID(string:)` reads it back).
public struct LeaseID: Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt64

    public init(rawValue: UInt64) {
        self.rawValue = rawValue
    }

    /// Parses the form `description` prints (16 lowercase hex digits).
    public init?(string: String) {
        guard string.utf8.count == 16, let value = UInt64(string, radix: 16) else { return nil }
        self.rawValue = value
    }

    public var description: String {
        let digits = String(rawValue, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

/// A reservation made by an allowed call: its estimated units and, if the rule
/// limits concurrency, one slot. Settle it when the call ends.
public struct Lease: Sendable, Hashable {
    public var id: LeaseID
    /// The units reserved at admission (the estimate).
    public var reservedUnits: UInt64
    /// Whether the lease holds a concurrency slot.
    public var holdsSlot: Bool
    /// When the lease expires if not settled, in the store clock's nanoseconds.
    /// At that moment its slot frees and its reservation stays charged.
    public var expiresAt: UInt64

    public init(id: LeaseID, reservedUnits: UInt64, holdsSlot: Bool, expiresAt: UInt64) {
        self.id = id
        self.reservedUnits = reservedUnits
        self.holdsSlot = holdsSlot
        self.expiresAt = expiresAt
    }
}

/// Why a settlement was refused. Thrown by `RateLimitStore.settle`.
public enum LeaseError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The store never issued this lease.
    case unknown(LeaseID)
    /// The lease was settled already; the first settlement stands.
    case alreadySettled(LeaseID)
    /// The lease reached its TTL before it was settled: its slot was freed then
    /// and its reservation stays charged.
    case expired(LeaseID)

    public var description: String {
        switch self {
        case .unknown(let id): "unknown lease \(id): this store never issued it"
        case .alreadySettled(let id): "lease \(id) was already settled"
        case .expired(let id): "lease \(id) expired before it was settled: its slot was freed and its reservation stays charged"
        }
    }
}
