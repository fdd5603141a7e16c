import Foundation
import Synchronization
import WeirPolicy

/// The account registry: accounts (tier pin, cumulative recharges, overrides), their
/// API keys (SHA-256 hashes, never the keys) and every recharge.
///
/// Where it lives is a `RegistryBackend`: a SQLite file (`SQLiteRegistryBackend`, one
/// instance) or Redis (`RedisRegistryBackend`, shared by every instance).
///
/// **Durability.** Every change is persisted by the backend before the method returns,
/// so an operator who got an answer keeps the change through a crash or a `kill -9`
/// (for Redis, as far as its persistence settings keep it: see the README).
///
/// **Reads** (`account(id:)`, `accountID(forKeyHash:)`) are served from an in-memory
/// snapshot under a short lock and never touch the backend. A change made here is in
/// the snapshot when its method returns; a change made by another instance (Redis) is
/// picked up by `refresh()`, which the server calls every `--registry-refresh-ms`.
///
/// **Changes** are small and idempotent (`Change`): a recharge adds its amount, a pin
/// or override set replaces, an account is created if missing. Concurrent writers,
/// here or on other instances, therefore never lose each other's changes.
///
/// Concurrency: thread-safe; writes suspend while the backend works.
final class Registry: Sendable {
    /// One account as the registry knows it.
    struct Account: Sendable, Equatable {
        var id: String
        /// A tier the operator pinned the account to, or nil to follow the recharges.
        var pinnedTier: String?
        /// Cumulative recharges recorded here (a config file may add its own).
        var recharges: Decimal
        /// Overrides set by the operator; nil when never set.
        var overrides: [Override]?
        var keys: [Key]
    }

    /// One API key, as stored: its public prefix and its SHA-256.
    struct Key: Sendable, Equatable {
        var prefix: String
        var hash: String
        var account: String
        var createdAt: String
    }

    /// Everything decisions read, as of one moment of the backend.
    struct Snapshot: Sendable {
        var accounts: [String: Account] = [:]
        var keysByHash: [String: Key] = [:]
        var keysByPrefix: [String: Key] = [:]

        mutating func apply(_ change: Change) {
            switch change {
            case .ensureAccount(let id, _):
                if accounts[id] == nil {
                    accounts[id] = Account(id: id, pinnedTier: nil, recharges: 0, overrides: nil, keys: [])
                }
            case .setPin(let id, let tier, _):
                accounts[id]?.pinnedTier = tier
            case .setOverrides(let id, let overrides, _):
                accounts[id]?.overrides = overrides
            case .addKey(let key):
                guard keysByPrefix[key.prefix] == nil else { return }
                accounts[key.account]?.keys.append(key)
                keysByHash[key.hash] = key
                keysByPrefix[key.prefix] = key
            case .revokeKey(let prefix, _):
                guard let key = keysByPrefix.removeValue(forKey: prefix) else { return }
                keysByHash[key.hash] = nil
                accounts[key.account]?.keys.removeAll { $0.prefix == prefix }
            case .recharge(let id, let amount, _):
                accounts[id]?.recharges += amount
            }
        }
    }

    /// One change to the registry. Each carries its time (ISO 8601) for the record.
    enum Change: Sendable {
        case ensureAccount(String, at: String)
        case setPin(String, String?, at: String)
        case setOverrides(String, [Override], at: String)
        case addKey(Key)
        case revokeKey(prefix: String, at: String)
        case recharge(String, amount: Decimal, at: String)
    }

    let backend: any RegistryBackend
    private let snapshot: Mutex<Snapshot>

    /// Opens the registry on `backend` and loads its snapshot.
    init(backend: any RegistryBackend) async throws {
        self.backend = backend
        self.snapshot = Mutex(try await backend.load())
    }

    /// Where the registry lives, for the start-up line: a file path or a Redis URL.
    var location: String { backend.location }

    // MARK: - Reads (memory)

    func account(id: String) -> Account? {
        snapshot.withLock { $0.accounts[id] }
    }

    /// Every account, for listings and the dashboard.
    var accounts: [Account] { snapshot.withLock { Array($0.accounts.values) } }

    /// The account owning the key whose SHA-256 (lowercase hex) is `hash`, or nil.
    ///
    /// The lookup is keyed by the hash, never by the key, so its timing can tell an
    /// attacker about hashes only (which SHA-256 makes useless for forging a key); the
    /// hash found is then compared in full in constant time.
    func accountID(forKeyHash hash: String) -> String? {
        guard let key = snapshot.withLock({ $0.keysByHash[hash] }) else { return nil }
        return ConstantTime.equals(key.hash, hash) ? key.account : nil
    }

    var accountCount: Int { snapshot.withLock { $0.accounts.count } }

    /// The ids of every account in the registry, in no order.
    var accountIDs: [String] { snapshot.withLock { Array($0.accounts.keys) } }

    /// Whether the backend answers.
    func isReachable() async -> Bool {
        await backend.isReachable()
    }

    /// Loads the backend's changes made elsewhere, if any (a no-op for SQLite); true when
    /// it loaded some.
    @discardableResult
    func refresh() async throws -> Bool {
        guard let loaded = try await backend.loadIfChanged() else { return false }
        snapshot.withLock { $0 = loaded }
        return true
    }

    // MARK: - Writes (backend first, then memory)

    /// What to do with an account's tier pin.
    enum PinChange: Sendable {
        case keep
        case set(String?)
    }

    /// Creates the account if needed, then applies the changes given.
    func upsertAccount(id: String, pin: PinChange, overrides: [Override]?) async throws -> Account {
        let now = Self.timestamp()
        var changes: [Change] = [.ensureAccount(id, at: now)]
        if case .set(let tier) = pin { changes.append(.setPin(id, tier, at: now)) }
        if let overrides { changes.append(.setOverrides(id, overrides, at: now)) }
        try await write(changes)
        return account(id: id)!
    }

    /// Creates the account row for an account known from the config only.
    func ensureAccount(id: String) async throws -> Account {
        try await write([.ensureAccount(id, at: Self.timestamp())])
        return account(id: id)!
    }

    /// Records a new key for `account` (which must exist): its prefix and hash only.
    func addKey(prefix: String, hash: String, account: String) async throws -> Key {
        let key = Key(prefix: prefix, hash: hash, account: account, createdAt: Self.timestamp())
        try await write([.addKey(key)])
        return key
    }

    /// Whether a key (live or revoked) already has this prefix.
    func prefixExists(_ prefix: String) async throws -> Bool {
        try await backend.prefixExists(prefix)
    }

    /// Revokes the live key with `prefix`; nil when there is none.
    func revokeKey(prefix: String) async throws -> Key? {
        try await refresh()
        guard let key = snapshot.withLock({ $0.keysByPrefix[prefix] }) else { return nil }
        try await write([.revokeKey(prefix: prefix, at: Self.timestamp())])
        return key
    }

    /// Records a recharge of `amount` (positive) and adds it to the account's total.
    func recharge(account id: String, amount: Decimal) async throws -> Account {
        let now = Self.timestamp()
        try await write([.ensureAccount(id, at: now), .recharge(id, amount: amount, at: now)])
        return account(id: id)!
    }

    /// Closes the backend (after the last write). Later calls fail.
    func close() async throws {
        try await backend.close()
    }

    /// Persists `changes` atomically, then applies them to the snapshot. The backend
    /// calls `publish` in its commit order, so memory never goes back in time.
    private func write(_ changes: [Change]) async throws {
        try await backend.persist(changes) { [self] in
            self.snapshot.withLock { state in
                for change in changes { state.apply(change) }
            }
        }
    }

    static func text(_ amount: Decimal) -> String {
        var value = amount
        return NSDecimalString(&value, Locale(identifier: "en_US_POSIX"))
    }

    static func decimal(_ text: String) -> Decimal? {
        Decimal(string: text, locale: Locale(identifier: "en_US_POSIX"))
    }

    static func timestamp() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date())
    }
}

/// Where the registry persists. Implementations: `SQLiteRegistryBackend`,
/// `RedisRegistryBackend`.
///
/// Concurrency: thread-safe.
protocol RegistryBackend: Sendable {
    /// A file path or URL, for logs.
    var location: String { get }
    /// Everything, as one consistent snapshot.
    func load() async throws -> Registry.Snapshot
    /// A new snapshot when changes were made elsewhere since the last load; else nil.
    func loadIfChanged() async throws -> Registry.Snapshot?
    /// Persists `changes` atomically (all or none), then calls `publish`; publishes
    /// happen in the order the changes were committed.
    func persist(_ changes: [Registry.Change], publish: @escaping @Sendable () -> Void) async throws
    func prefixExists(_ prefix: String) async throws -> Bool
    func isReachable() async -> Bool
    func close() async throws
}
