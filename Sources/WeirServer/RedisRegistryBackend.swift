import Foundation
import Synchronization
import WeirCore
import WeirRedis

/// The registry in Redis, shared by every instance on the same Redis and prefix, so
/// that a recharge or a key made through one instance is honoured by all of them
/// within one refresh interval.
///
/// **Layout.** Hashes under one hash tag, so that every registry key is on one Redis
/// Cluster slot and a snapshot is one `MULTI`/`EXEC`:
/// `<prefix>{registry}:accounts` (id -> created at), `:pins` (id -> tier), `:overrides`
/// (id -> JSON), `:recharges` (id -> the amounts, comma-separated, summed in `Decimal`
/// on load: exact, and an append never loses a concurrent one), `:keys` (SHA-256 ->
/// prefix, account, created at), `:prefixes` (prefix -> the hash of a live key, or `revoked`),
/// `:recharge-log` (a list of every recharge, for the record), and `:version`, which
/// every change increments.
///
/// **Refresh.** `loadIfChanged` reads `:version` (one `GET`) and loads everything
/// when it moved. A snapshot loaded before one of this instance's own changes is
/// never published after it: memory does not go back in time.
///
/// **Durability** is Redis's: run it with `appendonly yes` (and `appendfsync always`
/// for every acknowledged change to survive a crash of Redis itself).
///
/// Concurrency: thread-safe; each call is one or two round trips.
final class RedisRegistryBackend: RegistryBackend {
    private let client: RedisClient
    private let base: String
    let location: String
    /// The version of the last snapshot loaded, and the highest version this instance
    /// wrote: a load older than a write of ours is not published.
    private let versions = Mutex((loaded: Int64(-1), written: Int64(-1)))

    init(client: RedisClient, keyPrefix: String, location: String) {
        self.client = client
        self.base = keyPrefix + "{registry}:"
        self.location = location
    }

    private var accountsKey: String { base + "accounts" }
    private var pinsKey: String { base + "pins" }
    private var overridesKey: String { base + "overrides" }
    private var rechargesKey: String { base + "recharges" }
    private var keysKey: String { base + "keys" }
    private var prefixesKey: String { base + "prefixes" }
    private var logKey: String { base + "recharge-log" }
    private var versionKey: String { base + "version" }

    /// Appends `ARGV[2]` to the comma-separated list in field `ARGV[1]` of hash `KEYS[1]`.
    private static let appendScript = """
        local current = redis.call('HGET', KEYS[1], ARGV[1])
        if current then redis.call('HSET', KEYS[1], ARGV[1], current .. ',' .. ARGV[2])
        else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
        return 1
        """

    func load() async throws -> Registry.Snapshot {
        let (version, snapshot) = try await fetch()
        versions.withLock { $0.loaded = max($0.loaded, version) }
        return snapshot
    }

    func loadIfChanged() async throws -> Registry.Snapshot? {
        let reply = try RedisClient.checked(try await client.pipeline([["GET", versionKey]])[0])
        let current = reply.string.flatMap { Int64($0) } ?? 0
        guard versions.withLock({ current > $0.loaded }) else { return nil }
        let (version, snapshot) = try await fetch()
        return versions.withLock { state -> Registry.Snapshot? in
            guard version > state.loaded, version >= state.written else { return nil }
            state.loaded = version
            return snapshot
        }
    }

    /// One consistent read of everything.
    private func fetch() async throws -> (Int64, Registry.Snapshot) {
        let replies = try await client.pipeline([
            ["MULTI"], ["GET", versionKey], ["HGETALL", accountsKey], ["HGETALL", pinsKey], ["HGETALL", overridesKey],
            ["HGETALL", rechargesKey], ["HGETALL", keysKey], ["EXEC"],
        ])
        guard case .array(let results?) = try RedisClient.checked(replies[replies.count - 1]), results.count == 6 else {
            throw Self.malformed("EXEC")
        }
        let version = results[0].string.flatMap { Int64($0) } ?? 0
        let accounts = try Self.pairs(results[1])
        let pins = try Self.pairs(results[2])
        let overrides = try Self.pairs(results[3])
        let recharges = try Self.pairs(results[4])
        let keys = try Self.pairs(results[5])
        var snapshot = Registry.Snapshot()
        for (id, _) in accounts {
            var total: Decimal = 0
            for amount in (recharges[id] ?? "").split(separator: ",") {
                guard let value = Registry.decimal(String(amount)) else { throw Self.malformed("recharge \(amount) of \(id)") }
                total += value
            }
            snapshot.accounts[id] = Registry.Account(
                id: id, pinnedTier: pins[id].flatMap { $0.isEmpty ? nil : $0 }, recharges: total,
                overrides: overrides[id].flatMap(OverrideCoding.decode), keys: [])
        }
        for (hash, record) in keys.sorted(by: { $0.value < $1.value }) {
            let fields = record.split(separator: "\t", omittingEmptySubsequences: false)
            guard fields.count == 3 else { throw Self.malformed("key record") }
            snapshot.apply(.addKey(Registry.Key(
                prefix: String(fields[0]), hash: hash, account: String(fields[1]), createdAt: String(fields[2]))))
        }
        return (version, snapshot)
    }

    func persist(_ changes: [Registry.Change], publish: @escaping @Sendable () -> Void) async throws {
        var commands: [[String]] = [["MULTI"]]
        for change in changes {
            switch change {
            case .ensureAccount(let id, let now):
                commands.append(["HSETNX", accountsKey, id, now])
            case .setPin(let id, let tier, _):
                commands.append(tier.map { ["HSET", pinsKey, id, $0] } ?? ["HDEL", pinsKey, id])
            case .setOverrides(let id, let overrides, _):
                commands.append(["HSET", overridesKey, id, OverrideCoding.encode(overrides)])
            case .addKey(let key):
                commands.append(["HSET", keysKey, key.hash, "\(key.prefix)\t\(key.account)\t\(key.createdAt)"])
                commands.append(["HSET", prefixesKey, key.prefix, key.hash])
            case .revokeKey(let prefix, _):
                // The key's hash is looked up in Redis, not in this instance's snapshot.
                commands.append(["EVAL", Self.revokeScript, "2", keysKey, prefixesKey, prefix])
            case .recharge(let id, let amount, let now):
                let text = Registry.text(amount)
                commands.append(["EVAL", Self.appendScript, "1", rechargesKey, id, text])
                commands.append(["RPUSH", logKey, "\(id)\t\(text)\t\(now)"])
            }
        }
        commands.append(["INCR", versionKey])
        commands.append(["EXEC"])
        let replies = try await client.pipeline(commands)
        for reply in replies { _ = try RedisClient.checked(reply) }
        guard case .array(let results?) = replies[replies.count - 1], let last = results.last, case .integer(let version) = last else {
            throw Self.malformed("EXEC")
        }
        for result in results { _ = try RedisClient.checked(result) }
        versions.withLock { $0.written = max($0.written, version) }
        publish()
    }

    /// Revokes the key whose prefix is `ARGV[1]`: `KEYS[2]` (prefix -> hash of a live key,
    /// or `revoked`) gives its hash, which leaves `KEYS[1]` (hash -> record).
    private static let revokeScript = """
        local hash = redis.call('HGET', KEYS[2], ARGV[1])
        if hash and hash ~= 'revoked' then redis.call('HDEL', KEYS[1], hash) end
        redis.call('HSET', KEYS[2], ARGV[1], 'revoked')
        return 1
        """

    func prefixExists(_ prefix: String) async throws -> Bool {
        let reply = try RedisClient.checked(try await client.pipeline([["HEXISTS", prefixesKey, prefix]])[0])
        return reply == .integer(1)
    }

    func isReachable() async -> Bool {
        guard let replies = try? await client.pipeline([["PING"]]) else { return false }
        return replies.first?.errorMessage == nil
    }

    func close() async throws {}

    private static func pairs(_ value: RESPValue) throws -> [String: String] {
        guard case .array(let items?) = value, items.count.isMultiple(of: 2) else { throw malformed("HGETALL") }
        var result: [String: String] = [:]
        result.reserveCapacity(items.count / 2)
        var index = 0
        while index < items.count {
            guard let field = items[index].string, let value = items[index + 1].string else { throw malformed("HGETALL") }
            result[field] = value
            index += 2
        }
        return result
    }

    private static func malformed(_ what: String) -> StoreError {
        StoreError("redis registry: unexpected reply to \(what)", isTransient: false)
    }
}
