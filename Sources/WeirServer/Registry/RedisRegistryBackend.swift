import Foundation
import Synchronization
import WeirCore
import WeirRedis

/// The registry in Redis, shared by every instance on the same Redis and prefix, so
/// that a recharge or a key made through one instance is honoured by all of them
/// within one refresh interval.
///
/// **Layout.** Hashes under one hash tag, so that every registry key is on one Redis
/// Cluster slot, and a snapshot read or a change is one Lua script (atomic):
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

    /// Every registry key, in the order the scripts name them (`KEYS[1]`...`KEYS[8]`).
    private var allKeys: [String] {
        [versionKey, accountsKey, pinsKey, overridesKey, rechargesKey, keysKey, prefixesKey, logKey]
    }

    /// Reads everything at once: the version and five hashes.
    private static let readScript = """
        return {redis.call('GET', KEYS[1]) or '0', redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
          redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[5]), redis.call('HGETALL', KEYS[6])}
        """

    /// Applies a list of changes atomically and returns the new version. `ARGV` is a
    /// sequence of operations, each an opcode and a fixed number of arguments.
    private static let writeScript = """
        local i = 1
        while i <= #ARGV do
          local op = ARGV[i]
          if op == 'ensure' then
            redis.call('HSETNX', KEYS[2], ARGV[i + 1], ARGV[i + 2]); i = i + 3
          elseif op == 'pin' then
            redis.call('HSET', KEYS[3], ARGV[i + 1], ARGV[i + 2]); i = i + 3
          elseif op == 'unpin' then
            redis.call('HDEL', KEYS[3], ARGV[i + 1]); i = i + 2
          elseif op == 'overrides' then
            redis.call('HSET', KEYS[4], ARGV[i + 1], ARGV[i + 2]); i = i + 3
          elseif op == 'recharge' then
            local current = redis.call('HGET', KEYS[5], ARGV[i + 1])
            if current then current = current .. ',' .. ARGV[i + 2] else current = ARGV[i + 2] end
            redis.call('HSET', KEYS[5], ARGV[i + 1], current)
            redis.call('RPUSH', KEYS[8], ARGV[i + 1] .. '\t' .. ARGV[i + 2] .. '\t' .. ARGV[i + 3]); i = i + 4
          elseif op == 'addkey' then
            redis.call('HSET', KEYS[6], ARGV[i + 1], ARGV[i + 2] .. '\t' .. ARGV[i + 3] .. '\t' .. ARGV[i + 4])
            redis.call('HSET', KEYS[7], ARGV[i + 2], ARGV[i + 1]); i = i + 5
          elseif op == 'revoke' then
            local hash = redis.call('HGET', KEYS[7], ARGV[i + 1])
            if hash and hash ~= 'revoked' then redis.call('HDEL', KEYS[6], hash) end
            redis.call('HSET', KEYS[7], ARGV[i + 1], 'revoked'); i = i + 2
          else
            return redis.error_reply('unknown registry operation ' .. tostring(op))
          end
        end
        return redis.call('INCR', KEYS[1])
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

    /// One consistent read of everything (one script: atomic, and on one cluster slot).
    private func fetch() async throws -> (Int64, Registry.Snapshot) {
        let names = allKeys
        let reply = try await client.pipeline([["EVAL", Self.readScript, String(names.count)] + names])[0]
        guard case .array(let results?) = try RedisClient.checked(reply), results.count == 6 else {
            throw Self.malformed("the registry read")
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
        var operations: [String] = []
        for change in changes {
            switch change {
            case .ensureAccount(let id, let now):
                operations += ["ensure", id, now]
            case .setPin(let id, let tier, _):
                operations += tier.map { ["pin", id, $0] } ?? ["unpin", id]
            case .setOverrides(let id, let overrides, _):
                operations += ["overrides", id, OverrideCoding.encode(overrides)]
            case .addKey(let key):
                operations += ["addkey", key.hash, key.prefix, key.account, key.createdAt]
            case .revokeKey(let prefix, _):
                // The key's hash is looked up in Redis, not in this instance's snapshot.
                operations += ["revoke", prefix]
            case .recharge(let id, let amount, let now):
                operations += ["recharge", id, Registry.text(amount), now]
            }
        }
        let keys = allKeys
        let reply = try await client.pipeline([["EVAL", Self.writeScript, String(keys.count)] + keys + operations])[0]
        guard case .integer(let version) = try RedisClient.checked(reply) else { throw Self.malformed("the registry write") }
        versions.withLock { $0.written = max($0.written, version) }
        publish()
    }

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
