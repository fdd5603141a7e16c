import Foundation
import GRDB
import Logging
import Synchronization
import WeirPolicy

/// The account registry: accounts (tier pin, cumulative recharges, overrides), their
/// API keys (SHA-256 hashes, never the keys) and every recharge, in one SQLite file.
///
/// **Durability.** Every change is committed (SQLite, `synchronous = FULL`) before the
/// method returns, so an operator who got an answer keeps the change through a crash
/// or a `kill -9`. The in-memory copy that decisions read is updated after the commit,
/// on the database's serial writer, so it never runs ahead of the file nor goes back
/// in time.
///
/// **Reads** (`account(id:)`, `accountID(forKeyHash:)`) are served from memory under a
/// short lock and never touch the file.
///
/// Concurrency: thread-safe; writes suspend while SQLite works on its own thread.
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

    private struct Snapshot {
        var accounts: [String: Account] = [:]
        var keysByHash: [String: Key] = [:]
        var keysByPrefix: [String: Key] = [:]
    }

    let path: String
    private let database: DatabaseQueue
    private let snapshot: Mutex<Snapshot>

    /// Opens (creating if needed) `registry.sqlite` in `directory`.
    init(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = (directory as NSString).appendingPathComponent("registry.sqlite")
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        configuration.label = "weir.registry"
        database = try DatabaseQueue(path: path, configuration: configuration)
        try Self.migrator.migrate(database)
        snapshot = Mutex(try database.read { db in try Self.load(db) })
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: "accounts") { table in
                table.primaryKey("id", .text)
                table.column("pinned_tier", .text)
                table.column("recharges", .text).notNull().defaults(to: "0")
                table.column("overrides", .text)
                table.column("created_at", .text).notNull()
                table.column("updated_at", .text).notNull()
            }
            try db.create(table: "api_keys") { table in
                table.primaryKey("prefix", .text)
                table.column("hash", .text).notNull().unique()
                table.column("account_id", .text).notNull().references("accounts", onDelete: .cascade)
                table.column("created_at", .text).notNull()
                table.column("revoked_at", .text)
            }
            try db.create(table: "recharges") { table in
                table.autoIncrementedPrimaryKey("id")
                table.column("account_id", .text).notNull().references("accounts", onDelete: .cascade)
                table.column("amount", .text).notNull()
                table.column("created_at", .text).notNull()
            }
        }
        return migrator
    }

    private static func load(_ db: Database) throws -> Snapshot {
        var snapshot = Snapshot()
        for row in try Row.fetchAll(db, sql: "SELECT id, pinned_tier, recharges, overrides FROM accounts") {
            let id: String = row["id"]
            let overridesText: String? = row["overrides"]
            snapshot.accounts[id] = Account(
                id: id,
                pinnedTier: row["pinned_tier"],
                recharges: Decimal(string: row["recharges"] as String, locale: Locale(identifier: "en_US_POSIX")) ?? 0,
                overrides: overridesText.flatMap(OverrideCoding.decode),
                keys: [])
        }
        let keys = try Row.fetchAll(
            db, sql: "SELECT prefix, hash, account_id, created_at FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, prefix")
        for row in keys {
            let key = Key(prefix: row["prefix"], hash: row["hash"], account: row["account_id"], createdAt: row["created_at"])
            snapshot.accounts[key.account]?.keys.append(key)
            snapshot.keysByHash[key.hash] = key
            snapshot.keysByPrefix[key.prefix] = key
        }
        return snapshot
    }

    // MARK: - Reads (memory)

    func account(id: String) -> Account? {
        snapshot.withLock { $0.accounts[id] }
    }

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

    /// Whether the file answers a query.
    func isReachable() async -> Bool {
        (try? await database.read { db in try Int.fetchOne(db, sql: "SELECT 1") }) == 1
    }

    // MARK: - Writes (file first, then memory)

    /// What to do with an account's tier pin.
    enum PinChange: Sendable {
        case keep
        case set(String?)
    }

    /// Creates the account if needed, then applies the changes given.
    func upsertAccount(id: String, pin: PinChange, overrides: [Override]?) async throws -> Account {
        try await write { db, snapshot in
            let now = Self.timestamp()
            try Self.ensureAccount(id, db: db, snapshot: &snapshot, now: now)
            var account = snapshot.accounts[id]!
            if case .set(let tier) = pin { account.pinnedTier = tier }
            if let overrides { account.overrides = overrides }
            try db.execute(
                sql: "UPDATE accounts SET pinned_tier = ?, overrides = ?, updated_at = ? WHERE id = ?",
                arguments: [account.pinnedTier, account.overrides.map(OverrideCoding.encode), now, id])
            return account
        } publish: { snapshot, account in
            snapshot.accounts[account.id] = account
        }
    }

    /// Creates the account row for an account known from the config only.
    func ensureAccount(id: String) async throws -> Account {
        try await write { db, snapshot in
            try Self.ensureAccount(id, db: db, snapshot: &snapshot, now: Self.timestamp())
            return snapshot.accounts[id]!
        } publish: { snapshot, account in
            snapshot.accounts[account.id] = account
        }
    }

    /// Records a new key for `account` (which must exist): its prefix and hash only.
    func addKey(prefix: String, hash: String, account: String) async throws -> Key {
        try await write { db, snapshot in
            let key = Key(prefix: prefix, hash: hash, account: account, createdAt: Self.timestamp())
            try db.execute(
                sql: "INSERT INTO api_keys (prefix, hash, account_id, created_at) VALUES (?, ?, ?, ?)",
                arguments: [key.prefix, key.hash, key.account, key.createdAt])
            return key
        } publish: { snapshot, key in
            snapshot.accounts[key.account]?.keys.append(key)
            snapshot.keysByHash[key.hash] = key
            snapshot.keysByPrefix[key.prefix] = key
        }
    }

    /// Whether a key (live or revoked) already has this prefix.
    func prefixExists(_ prefix: String) async throws -> Bool {
        try await database.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM api_keys WHERE prefix = ?", arguments: [prefix]) ?? 0 > 0
        }
    }

    /// Revokes the live key with `prefix`; nil when there is none.
    func revokeKey(prefix: String) async throws -> Key? {
        try await write { db, snapshot -> Key? in
            guard let key = snapshot.keysByPrefix[prefix] else { return nil }
            try db.execute(
                sql: "UPDATE api_keys SET revoked_at = ? WHERE prefix = ?", arguments: [Self.timestamp(), prefix])
            return key
        } publish: { snapshot, key in
            guard let key else { return }
            snapshot.keysByPrefix[key.prefix] = nil
            snapshot.keysByHash[key.hash] = nil
            snapshot.accounts[key.account]?.keys.removeAll { $0.prefix == key.prefix }
        }
    }

    /// Records a recharge of `amount` (positive) and adds it to the account's total.
    func recharge(account id: String, amount: Decimal) async throws -> Account {
        try await write { db, snapshot in
            let now = Self.timestamp()
            try Self.ensureAccount(id, db: db, snapshot: &snapshot, now: now)
            var account = snapshot.accounts[id]!
            account.recharges += amount
            try db.execute(
                sql: "INSERT INTO recharges (account_id, amount, created_at) VALUES (?, ?, ?)",
                arguments: [id, Self.text(amount), now])
            try db.execute(
                sql: "UPDATE accounts SET recharges = ?, updated_at = ? WHERE id = ?",
                arguments: [Self.text(account.recharges), now, id])
            return account
        } publish: { snapshot, account in
            snapshot.accounts[account.id] = account
        }
    }

    /// Closes the file (after the last write). Later calls fail.
    func close() throws {
        try database.close()
    }

    /// Runs `change` in one transaction on the serial writer and, once committed,
    /// `publish` on the in-memory snapshot, still on the writer: memory follows the
    /// file in commit order.
    private func write<T: Sendable>(
        _ change: @escaping @Sendable (Database, inout Snapshot) throws -> T,
        publish: @escaping @Sendable (inout Snapshot, T) -> Void
    ) async throws -> T {
        try await database.writeWithoutTransaction { db in
            var draft = self.snapshot.withLock { $0 }
            var result: T?
            try db.inTransaction {
                result = try change(db, &draft)
                return .commit
            }
            let value = result!
            self.snapshot.withLock { publish(&$0, value) }
            return value
        }
    }

    private static func ensureAccount(_ id: String, db: Database, snapshot: inout Snapshot, now: String) throws {
        guard snapshot.accounts[id] == nil else { return }
        try db.execute(
            sql: "INSERT INTO accounts (id, recharges, created_at, updated_at) VALUES (?, '0', ?, ?)",
            arguments: [id, now, now])
        snapshot.accounts[id] = Account(id: id, pinnedTier: nil, recharges: 0, overrides: nil, keys: [])
    }

    static func text(_ amount: Decimal) -> String {
        var value = amount
        return NSDecimalString(&value, Locale(identifier: "en_US_POSIX"))
    }

    private static func timestamp() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date())
    }
}
