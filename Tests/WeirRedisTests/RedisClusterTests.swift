import Foundation
import NIOCore
import Testing
import WeirConformance
import WeirCore
@testable import WeirRedis
import WeirRedisTesting

@Suite("Hash slots")
struct HashSlotTests {
    @Test("CRC16 is XMODEM, and a hash tag decides the slot")
    func slots() {
        #expect(HashSlot.crc16(Array("123456789".utf8)[...]) == 0x31C3)
        #expect(HashSlot.slot(of: "{user1000}.following") == HashSlot.slot(of: "{user1000}.followers"))
        #expect(HashSlot.slot(of: "weir:{a|s}:rlog") == HashSlot.slot(of: "a|s"))
        #expect(HashSlot.slot(of: "foo{}{bar}") == HashSlot.slot(of: "foo{}{bar}"), "an empty tag hashes the whole key")
        #expect(HashSlot.slot(of: "foo{}{bar}") != HashSlot.slot(of: "bar"))
        #expect(HashSlot.keys(of: ["EVALSHA", "abc", "2", "k1", "k2", "arg"]) == ["k1", "k2"])
        #expect(HashSlot.keys(of: ["SCRIPT", "LOAD", "return 1"]).isEmpty)
        #expect(HashSlot.keys(of: ["EVALSHA", "abc", "9", "k1"]).isEmpty, "a malformed numkeys names no key")
        #expect(throws: StoreError.self) { try HashSlot.slot(of: ["EVAL", "s", "2", "{a}1", "{b}2"]) }
    }

    @Test("redirections parse, and nothing else does")
    func redirects() {
        let moved = ClusterRedirect(.error("MOVED 3999 127.0.0.1:6381"))
        #expect(moved?.kind == .moved && moved?.slot == 3999 && moved?.host == "127.0.0.1" && moved?.port == 6381)
        #expect(ClusterRedirect(.error("ASK 12 ::1:7000"))?.host == "::1")
        #expect(ClusterRedirect(.error("ERR MOVED 1 a:1")) == nil)
        #expect(ClusterRedirect(.error("MOVED 99999 a:1")) == nil)
        #expect(ClusterRedirect(.simpleString("MOVED 1 a:1")) == nil)
    }
}

@Suite("RedisClient and RedisStore against a three-master Redis Cluster")
struct RedisClusterTests {
    @Test("slots agree with Redis's own CLUSTER KEYSLOT")
    func keyslot() async throws {
        // One node in cluster mode is enough for CLUSTER KEYSLOT (no slots need be served).
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("weir-keyslot-\(UUID().uuidString).conf")
        let server = try await RedisServerProcess(arguments: [
            "--cluster-enabled", "yes", "--cluster-config-file", file.path,
            "--cluster-port", String(try await RedisServerProcess.freePort()),
        ])
        defer {
            server.stop()
            try? FileManager.default.removeItem(at: file)
        }
        do {
            let client = server.client()
            defer { Task { await client.close() } }
            for key in ["", "a", "weir:{acct|text/x}:rlog", "{lease:123}", "é{ü}", "x{}y", "{}{a}", "abc{def"] {
                guard case .integer(let slot) = try await client.command("CLUSTER", "KEYSLOT", key) else {
                    Issue.record("CLUSTER KEYSLOT gave no integer")
                    continue
                }
                #expect(HashSlot.slot(of: key) == Int(slot), "\(key)")
            }
        }
    }

    @Test("passes the store conformance suite, and routes by slot")
    func conformance() async throws {
        try await withRedisCluster { cluster in
            let client = cluster.servers[0].client(connections: 2)
            defer { Task { await client.close() } }
            for check in StoreConformance.checks {
                do {
                    try await check.run { clock in RedisStoreTests.store(client, clock: clock) }
                } catch {
                    Issue.record("\(check.name): \(error)")
                }
            }
            // A pipeline spanning nodes is split and its replies come back in order.
            let keys = (0..<12).map { "{k\($0)}v" }
            let owners = Set(keys.map { HashSlot.slot(of: $0) })
            #expect(owners.count > 1)
            let replies = try await client.pipeline(keys.map { ["SET", $0, $0] } + keys.map { ["GET", $0] })
            #expect(replies.suffix(12).map(\.string) == keys.map { Optional($0) })
            #expect(client.isClusterMode)
            let nodes = Set(keys.map { client.endpoint(forKey: $0) })
            #expect(nodes.count == 3, "12 tags over 3 masters: \(nodes)")
        }
    }

    @Test("concurrent acquires over accounts on every master: batches split by slot, each account admits exactly its limit")
    func concurrentBatches() async throws {
        try await withRedisCluster { cluster in
            let client = cluster.servers[0].client(connections: 2)
            defer { Task { await client.close() } }
            let store = RedisStore(client: client, keyPrefix: "cb:")
            let limits = LimitSet(requests: Limit(algorithm: .slidingWindow, limit: 3, window: 3_600 * Nanoseconds.perSecond))
            let accounts = (0..<24).map { LimitKey(account: "acct\($0)", scope: "s") }
            // 8 calls per account, all at once: batches hold calls of many slots and nodes.
            let admitted = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
                for call in 0..<(accounts.count * 8) {
                    group.addTask {
                        let account = call % accounts.count
                        return (account, try await store.acquire(AdmissionRequest(key: accounts[account], limits: limits)).isAllowed)
                    }
                }
                var admitted = [Int](repeating: 0, count: accounts.count)
                for try await (account, allowed) in group where allowed { admitted[account] += 1 }
                return admitted
            }
            #expect(admitted == [Int](repeating: 3, count: accounts.count))
            // The client has learnt the map by now: the accounts live on all three masters.
            #expect(Set(accounts.map { client.endpoint(forKey: "cb:{" + RedisStore.tag($0) + "}") }).count == 3)
        }
    }

    @Test("follows ASK while a slot migrates and MOVED once it has moved; the limit's state moves with its slot")
    func migration() async throws {
        try await withRedisCluster { cluster in
            let admins = cluster.servers.map { $0.client(connections: 1) }
            let client = cluster.servers[0].client(connections: 2)
            defer { Task { await client.close(); for admin in admins { await admin.close() } } }
            let clock = ManualClock(start: 1_000 * Nanoseconds.perSecond)
            let store = RedisStore(client: client, keyPrefix: "m:", clock: clock, idleGraceMilliseconds: 3_600_000)
            let limits = LimitSet(requests: .perMinute(10), concurrency: .concurrent(5))
            // A key the seed does not serve: the first call meets MOVED and learns the map.
            var account = 0
            var key = LimitKey(account: "a0", scope: "s")
            while true {
                key = LimitKey(account: "a\(account)", scope: "s")
                let slot = HashSlot.slot(of: RedisStore.tag(key))
                if try await Self.ownerIndex(of: slot, admins: admins, cluster: cluster) != 0 { break }
                account += 1
            }
            #expect(!client.isClusterMode)
            #expect(try await store.acquire(AdmissionRequest(key: key, limits: limits)).limits.requests?.remaining == 9)
            #expect(client.isClusterMode, "the first MOVED shows the cluster")
            let leased = try await store.acquire(AdmissionRequest(key: key, limits: limits, leaseTTL: 60 * Nanoseconds.perSecond))
            let lease = try #require(leased.lease)

            let slot = HashSlot.slot(of: RedisStore.tag(key))
            let source = try await Self.ownerIndex(of: slot, admins: admins, cluster: cluster)
            let target = (source + 1) % 3
            #expect(client.endpoint(forKey: "m:{\(RedisStore.tag(key))}") == "127.0.0.1:\(cluster.servers[source].port)")
            let sourceID = try #require(try await admins[source].command("CLUSTER", "MYID").string)
            let targetID = try #require(try await admins[target].command("CLUSTER", "MYID").string)
            try await admins[target].command("CLUSTER", "SETSLOT", String(slot), "IMPORTING", sourceID)
            try await admins[source].command("CLUSTER", "SETSLOT", String(slot), "MIGRATING", targetID)
            guard case .array(let names?) = try await admins[source].command("CLUSTER", "GETKEYSINSLOT", String(slot), "100") else {
                Issue.record("GETKEYSINSLOT gave no array")
                return
            }
            let migrated = names.compactMap(\.string)
            #expect(migrated.count >= 3, "state, log, slots, lease: \(migrated)")
            try await admins[source].command(
                "MIGRATE", "127.0.0.1", String(cluster.servers[target].port), "", "0", "5000", "KEYS", migrated[0])
            for name in migrated.dropFirst() {
                try await admins[source].command(
                    "MIGRATE", "127.0.0.1", String(cluster.servers[target].port), "", "0", "5000", "KEYS", name)
            }
            // Every key of the limit is gone from the source: it answers ASK, and the client asks
            // the target (after ASKING) without changing its map.
            let state = "m:{\(RedisStore.tag(key))}"
            #expect(try await client.command("HEXISTS", state, "rsum") == .integer(1), "followed ASK to the target")
            #expect(client.endpoint(forKey: state) == "127.0.0.1:\(cluster.servers[source].port)")
            // A script naming keys that do not exist yet is refused by the importing node
            // (TRYAGAIN): a transient failure during resharding, as Redis Cluster defines it.
            var remaining: UInt64 = 8
            do {
                let during = try await store.acquire(AdmissionRequest(key: key, limits: limits))
                #expect(during.limits.requests?.remaining == 7, "the log moved with its slot: \(during)")
                remaining = 7
            } catch let error as StoreError {
                #expect(error.isTransient && error.message.contains("TRYAGAIN"), "\(error)")
            }

            for admin in admins {
                try await admin.command("CLUSTER", "SETSLOT", String(slot), "NODE", targetID)
            }
            // Now the source answers MOVED: the client follows and updates its map.
            let after = try await store.acquire(AdmissionRequest(key: key, limits: limits))
            #expect(after.limits.requests?.remaining == remaining - 1, "the log moved with its slot: \(after)")
            #expect(after.limits.concurrency?.remaining == 4, "so did the lease's slot")
            #expect(client.endpoint(forKey: "m:{\(RedisStore.tag(key))}") == "127.0.0.1:\(cluster.servers[target].port)")
            // The lease index has its own slot: settling still finds the lease and frees its slot.
            let settled = try await store.settle(lease.id, actualUnits: 0)
            #expect(settled.key == key && settled.limits.concurrency?.remaining == 5)
        }
    }

    @Test("after a master dies and its slot is given to another, the client rereads the map")
    func failover() async throws {
        try await withRedisCluster { cluster in
            let admins = cluster.servers.map { $0.client(connections: 1) }
            let client = cluster.servers[0].client(connections: 2, initialBackoff: .zero)
            defer { Task { await client.close(); for admin in admins { await admin.close() } } }
            let clock = ManualClock(start: 1_000 * Nanoseconds.perSecond)
            let store = RedisStore(client: client, keyPrefix: "f:", clock: clock, idleGraceMilliseconds: 3_600_000)
            let limits = LimitSet(requests: .perMinute(10))
            var account = 0
            while try await Self.ownerIndex(of: HashSlot.slot(of: "a\(account)|s"), admins: admins, cluster: cluster) != 1 {
                account += 1
            }
            let key = LimitKey(account: "a\(account)", scope: "s")
            let slot = HashSlot.slot(of: RedisStore.tag(key))
            #expect(try await store.acquire(AdmissionRequest(key: key, limits: limits)).isAllowed)
            #expect(client.endpoint(forKey: "f:{\(RedisStore.tag(key))}") == "127.0.0.1:\(cluster.servers[1].port)")
            // The master dies; its slot is handed to the first master (as a failover would
            // promote a replica): the next call fails transiently, and the client rereads the map.
            cluster.servers[1].kill()
            let heir = try #require(try await admins[0].command("CLUSTER", "MYID").string)
            try await admins[0].command("CLUSTER", "SETSLOT", String(slot), "NODE", heir)
            try await admins[2].command("CLUSTER", "SETSLOT", String(slot), "NODE", heir)
            await #expect(throws: StoreError.self) { try await store.acquire(AdmissionRequest(key: key, limits: limits)) }
            #expect(client.endpoint(forKey: "f:{\(RedisStore.tag(key))}") == "127.0.0.1:\(cluster.servers[0].port)")
            let after = try await store.acquire(AdmissionRequest(key: key, limits: limits))
            #expect(after.isAllowed && after.limits.requests?.remaining == 9, "a new master without replicas starts empty: \(after)")
        }
    }

    @Test("the health probe pings every master: one master down fails it (transiently) until it is back")
    func probeEveryMaster() async throws {
        try await withRedisCluster { cluster in
            let client = cluster.servers[0].client(connections: 1, initialBackoff: .zero)
            defer { Task { await client.close() } }
            let store = RedisStore(client: client, keyPrefix: "p:")
            // Calls over many accounts: some are MOVED, and the client learns the map.
            for account in 0..<32 {
                _ = try await store.acquire(AdmissionRequest(
                    key: LimitKey(account: "p\(account)", scope: "s"), limits: LimitSet(requests: .perMinute(10))))
            }
            #expect(client.isClusterMode)
            try await store.probe()
            cluster.servers[1].kill()
            await #expect(throws: StoreError.self) { try await store.probe() }
            do {
                try await store.probe()
                Issue.record("a probe with a master down succeeded")
            } catch let error as StoreError {
                #expect(error.isTransient, "an unreachable master is an outage, not a bug: \(error)")
            }
            try cluster.servers[1].start()
            try await store.probe()
        }
    }

    /// The index in `cluster.servers` of the master serving `slot`.
    static func ownerIndex(of slot: Int, admins: [RedisClient], cluster: RedisClusterProcess) async throws -> Int {
        let map = try ClusterMap(slotsReply: try await admins[0].command("CLUSTER", "SLOTS"), defaultHost: "127.0.0.1")
        let endpoint = try #require(map.node(for: slot))
        return try #require(cluster.servers.firstIndex { "127.0.0.1:\($0.port)" == endpoint })
    }
}
