import Foundation
import GRDB

/// The registry in one SQLite file (`registry.sqlite` under `--data`), through GRDB.
///
/// Every change is committed with `synchronous = FULL` before `persist` returns, and
/// published on the database's serial writer, so memory follows the file in commit
/// order. Only this process writes the file: `loadIfChanged` never finds anything.
///
/// Concurrency: thread-safe; GRDB runs SQLite on its own serial queue.
final class SQLiteRegistryBackend: RegistryBackend {
    let path: String
    private let database: DatabaseQueue

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
    }

    var location: String { path }

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

    func load() async throws -> Registry.Snapshot {
        try await database.read { db in try Self.load(db) }
    }

    func loadIfChanged() async throws -> Registry.Snapshot? { nil }

    private static func load(_ db: Database) throws -> Registry.Snapshot {
        var snapshot = Registry.Snapshot()
        for row in try Row.fetchAll(db, sql: "SELECT id, pinned_tier, recharges, overrides FROM accounts") {
            let id: String = row["id"]
            let overridesText: String? = row["overrides"]
            snapshot.accounts[id] = Registry.Account(
                id: id,
                pinnedTier: row["pinned_tier"],
                recharges: Registry.decimal(row["recharges"]) ?? 0,
                overrides: overridesText.flatMap(OverrideCoding.decode),
                keys: [])
        }
        let keys = try Row.fetchAll(
            db, sql: "SELECT prefix, hash, account_id, created_at FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, prefix")
        for row in keys {
            snapshot.apply(.addKey(Registry.Key(
                prefix: row["prefix"], hash: row["hash"], account: row["account_id"], createdAt: row["created_at"])))
        }
        return snapshot
    }

    func persist(_ changes: [Registry.Change], publish: @escaping @Sendable () -> Void) async throws {
        try await database.writeWithoutTransaction { db in
            try db.inTransaction {
                for change in changes { try Self.execute(change, db: db) }
                return .commit
            }
            publish()
        }
    }

    private static func execute(_ change: Registry.Change, db: Database) throws {
        switch change {
        case .ensureAccount(let id, let now):
            try db.execute(
                sql: "INSERT OR IGNORE INTO accounts (id, recharges, created_at, updated_at) VALUES (?, '0', ?, ?)",
                arguments: [id, now, now])
        case .setPin(let id, let tier, let now):
            try db.execute(sql: "UPDATE accounts SET pinned_tier = ?, updated_at = ? WHERE id = ?", arguments: [tier, now, id])
        case .setOverrides(let id, let overrides, let now):
            try db.execute(
                sql: "UPDATE accounts SET overrides = ?, updated_at = ? WHERE id = ?",
                arguments: [OverrideCoding.encode(overrides), now, id])
        case .addKey(let key):
            try db.execute(
                sql: "INSERT INTO api_keys (prefix, hash, account_id, created_at) VALUES (?, ?, ?, ?)",
                arguments: [key.prefix, key.hash, key.account, key.createdAt])
        case .revokeKey(let prefix, let now):
            try db.execute(
                sql: "UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL", arguments: [now, prefix])
        case .recharge(let id, let amount, let now):
            try db.execute(
                sql: "INSERT INTO recharges (account_id, amount, created_at) VALUES (?, ?, ?)",
                arguments: [id, Registry.text(amount), now])
            // The total in Decimal, read and written in the same transaction.
            let total = try String.fetchOne(db, sql: "SELECT recharges FROM accounts WHERE id = ?", arguments: [id])
                .flatMap(Registry.decimal) ?? 0
            try db.execute(
                sql: "UPDATE accounts SET recharges = ?, updated_at = ? WHERE id = ?",
                arguments: [Registry.text(total + amount), now, id])
        }
    }

    func prefixExists(_ prefix: String) async throws -> Bool {
        try await database.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM api_keys WHERE prefix = ?", arguments: [prefix]) ?? 0 > 0
        }
    }

    func isReachable() async -> Bool {
        (try? await database.read { db in try Int.fetchOne(db, sql: "SELECT 1") }) == 1
    }

    func close() async throws {
        try database.close()
    }
}
