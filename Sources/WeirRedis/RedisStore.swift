import Synchronization
import WeirCore

/// A `RateLimitStore` in Redis, shared by every Weir instance that uses the same Redis
/// and key prefix.
///
/// Each operation is one function of Weir's Lua library (`RedisLibrary`, `Lua/weir.lua`),
/// called with `FCALL`; the library is loaded (`FUNCTION LOAD REPLACE`, on every master of
/// a cluster) when Redis answers that it lacks the function (a new or restarted server,
/// `FUNCTION FLUSH`), and the call made again. A function checks and updates every dimension of a call atomically,
/// with the same arithmetic as `GCRA`, `SlidingWindowLog` and `KeyState`, so the decisions
/// are those of `InMemoryStore` for the same timeline.
///
/// **Keys.** `<prefix>{account|scope}` and its `:rlog`, `:tlog`, `:slots`, `:lease:<id>`
/// companions: one hash tag per limit key, so a call's keys share a Redis Cluster slot.
/// `|`, `{`, `}` and `%` in account and scope are percent-encoded, so distinct keys never
/// share a tag's text. Keys expire once they carry no information, plus `idleGrace` (the
/// state hash up to one grace more: see the library's Expiry).
///
/// **Leases.** Lease ids have bit 63 set (never an `InMemoryStore` id). A lease's record lives with its limit key; settling only has the lease id,
/// so an index key `<prefix>{lease:<id>}` -> `account|scope` is written in the same
/// pipelined write as the acquire (one round trip) and read by `settle` before its function
/// (two round trips). The index outlives the record by `idleGrace`, so a lease past its
/// TTL is `expired`; once the index is gone too, it is `unknown`.
///
/// **Time.** Redis's own clock (`TIME`) unless a `NanosecondClock` is given, whose time
/// is then passed to each function call (tests drive the store with a `ManualClock` this way;
/// a batch takes the clock's time when it is sent). Key expiry always runs on Redis's
/// clock, hence the grace.
///
/// **Failures.** Every Redis or transport failure throws `StoreError` (transient for
/// timeouts, lost connections and Redis busy states; not for errors the library raises). A denial is
/// never an error.
///
/// **Batches.** Acquires that arrive while as many batches as the client has connections
/// are in flight wait for the next batch (`CallBatcher`), which is one acquire function call
/// for all of them (one per hash slot on a cluster): one `TIME`, then each call decided in
/// order, exactly as alone at that moment. An idle store sends each call at once. On a
/// cluster the in-flight bound counts batches across all nodes. A queued acquire waits
/// for one batch in flight at most, so its wait is bounded by twice the command timeout.
///
/// Concurrency: thread-safe; each method suspends for one round trip (settle: two), which
/// an acquire may share with others and wait for behind the batches in flight.
public final class RedisStore: RateLimitStore {
    public let client: RedisClient
    /// Prepended to every key, so that several deployments can share one Redis.
    public let keyPrefix: String
    private let clock: (any NanosecondClock)?
    private let graceMilliseconds: UInt64
    private let specCache = Mutex<[LimitSet: [String]]>([:])
    /// Acquires that queue while earlier ones are in flight go to Redis together.
    private let batcher: CallBatcher<AcquireCall, [RESPValue]>

    /// One acquire as the batched function takes it: its five keys, its seven arguments and,
    /// for a lease, the write of the lease's index (sent just before the call).
    struct AcquireCall: Sendable {
        var keys: [String]
        var arguments: [String]
        var index: [String]?
    }

    /// - Parameters:
    ///   - client: the connections to Redis.
    ///   - keyPrefix: prepended to every key (e.g. `weir:`).
    ///   - clock: nil in production (Redis `TIME`); a clock whose time is passed to the
    ///     functions, for tests and simulation.
    ///   - idleGraceMilliseconds: how long keys outlive the moment they go idle (at least;
    ///     the state hash up to twice as long), and lease indexes their records. Must exceed the largest difference between the store's
    ///     clock and Redis's while a key is in use (only with an injected clock).
    ///   - maximumBatch: acquires in one function call, at most (1 sends each alone). Up to
    ///     as many batches as the client has connections are in flight at once.
    public init(
        client: RedisClient, keyPrefix: String = "weir:", clock: (any NanosecondClock)? = nil,
        idleGraceMilliseconds: UInt64 = 1_000, maximumBatch: Int = 64
    ) {
        self.client = client
        self.keyPrefix = keyPrefix
        self.clock = clock
        self.graceMilliseconds = idleGraceMilliseconds
        self.batcher = CallBatcher(maximumInFlight: client.configuration.connectionCount, maximumBatch: maximumBatch)
    }

    // MARK: - RateLimitStore

    public func acquire(_ request: AdmissionRequest) async throws -> Decision {
        let (call, lease) = acquireCall(request)
        let reply = try await batcher.submit(call) { [self] calls in await acquireBatch(calls) }
        return try Self.decision(reply, lease: lease, limits: request.limits)
    }

    public func settle(_ lease: LeaseID, actualUnits: UInt64) async throws -> Settlement {
        let leaseName = lease.description
        let index = try await client.command("GET", indexKey(leaseName))
        guard let tag = index.string else { throw LeaseError.unknown(lease) }
        guard let key = Self.key(fromTag: tag) else { throw Self.malformed([tag]) }
        let base = keyPrefix + "{" + tag + "}"
        let reply = try await run(
            .settle, keys: keys(base, lease: leaseName),
            arguments: [now(), String(actualUnits), leaseName, String(graceMilliseconds)])
        switch reply.first?.string {
        case "expired": throw LeaseError.expired(lease)
        case "settled": throw LeaseError.alreadySettled(lease)
        case "ok" where reply.count == 14: break
        default: throw Self.malformed(reply)
        }
        let limitSet = try Self.limitSet(reply[3...6].map { $0.string ?? "" })
        return Settlement(
            key: key, charged: Self.number(reply[1]) ?? 0, refunded: Self.number(reply[2]) ?? 0,
            limits: try Self.statuses(reply[7...], limits: limitSet), limitSet: limitSet)
    }

    public func status(of key: LimitKey, limits: LimitSet) async throws -> LimitStatuses {
        let base = keyPrefix + "{" + Self.tag(key) + "}"
        var arguments = Self.specs(limits)
        arguments[3] = String(graceMilliseconds)
        arguments.insert(now(), at: 0)
        let reply = try await run(.status, keys: Array(keys(base, lease: "-").prefix(4)), arguments: arguments)
        guard reply.count == 7 else { throw Self.malformed(reply) }
        return try Self.statuses(reply[...], limits: limits)
    }

    /// `PING` on every master of the client.
    public func probe() async throws {
        try await client.ping()
    }

    /// The Lua function library's source, as `FUNCTION LOAD` takes it, and the name of its
    /// acquire function (for benchmarks that call it directly, e.g. `redis-benchmark FCALL`).
    /// KEYS and ARGV are documented in the library.
    public static var library: (source: String, acquireFunction: String) {
        (RedisLibrary.source, RedisLibrary.Function.acquire.name)
    }

    // MARK: - Function calls

    private func now() -> String {
        clock.map { String($0.now()) } ?? ""
    }

    private func keys(_ base: String, lease: String) -> [String] {
        [base, base + ":rlog", base + ":tlog", base + ":slots", base + ":lease:" + lease]
    }

    private func indexKey(_ lease: String) -> String {
        keyPrefix + "{lease:" + lease + "}"
    }

    /// Calls `function` and returns its reply's elements; see `call(_:keys:arguments:)`.
    private func run(_ function: RedisLibrary.Function, keys: [String], arguments: [String]) async throws -> [RESPValue] {
        let reply = try await call(function, keys: keys, arguments: arguments, after: [])
        guard case .array(let elements?) = try RedisClient.checked(reply.last!) else { throw Self.malformed([reply.last!]) }
        return elements
    }

    /// Sends `before` and `FCALL function` in one pipelined write and returns their
    /// replies. When the server lacks the function, the library is loaded on every master
    /// and the `FCALL` alone sent again (twice at most: a client that meets a cluster for
    /// the first time loads on the seed, then learns the map from the `MOVED` that follows).
    private func call(
        _ function: RedisLibrary.Function, keys: [String], arguments: [String], after before: [[String]]
    ) async throws -> [RESPValue] {
        let command = ["FCALL", function.name, String(keys.count)] + keys + arguments
        var replies = try await client.pipeline(before + [command])
        var loads = 0
        while RedisLibrary.isMissing(replies[before.count]), loads < 2 {
            try await client.onEveryMaster(["FUNCTION", "LOAD", "REPLACE", RedisLibrary.source])
            replies[before.count] = try await client.pipeline([command])[0]
            loads += 1
        }
        return replies
    }

    /// The acquire function's part of `request` (its keys and arguments, and its lease's index
    /// write), and the id of the lease it would issue.
    func acquireCall(_ request: AdmissionRequest) -> (AcquireCall, LeaseID?) {
        let tag = Self.tag(request.key)
        let base = keyPrefix + "{" + tag + "}"
        let lease = request.leaseTTL == nil ? nil : LeaseID(rawValue: UInt64.random(in: 0...UInt64.max) | 1 << 63)
        let leaseName = lease?.description ?? "-"
        var index: [String]?
        if let ttl = request.leaseTTL {
            let indexMilliseconds = min(Nanoseconds.millisecondsRoundedUp(ttl), 1 << 50) + 2 * min(graceMilliseconds, 1 << 50)
            index = ["SET", indexKey(leaseName), tag, "PX", String(indexMilliseconds)]
        }
        var arguments = cachedSpecs(request.limits)
        arguments += [String(request.units), request.leaseTTL.map { String($0) } ?? "", leaseName]
        return (AcquireCall(keys: keys(base, lease: leaseName), arguments: arguments, index: index), lease)
    }

    /// The decision in an acquire's reply (see the library's `acquire`); `lease` is the id
    /// the call asked for, if any.
    static func decision(_ reply: [RESPValue], lease: LeaseID?, limits: LimitSet) throws -> Decision {
        guard reply.count == 14 else { throw malformed(reply) }
        let statuses = try statuses(reply[7...], limits: limits)
        var issued: Lease?
        if let lease, let expiresAt = number(reply[4]) {
            issued = Lease(id: lease, reservedUnits: number(reply[5]) ?? 0, holdsSlot: number(reply[6]) == 1, expiresAt: expiresAt)
        }
        let reason = reply[1].string ?? ""
        return Decision(
            isAllowed: number(reply[0]) == 1,
            reason: reason.isEmpty ? nil : try Self.reason(reason),
            retryAfter: number(reply[2]),
            isShadowed: number(reply[3]) == 1,
            limits: statuses,
            lease: issued)
    }

    /// Sends a batch of acquires: one acquire function call for all of them on a single
    /// Redis, or one per hash slot on a cluster (where a call's keys must share a slot),
    /// each group in one pipelined write after the indexes of the leases its calls would
    /// issue. Groups go concurrently and fail alone: a node that cannot be reached fails
    /// only the calls whose slots it serves. Answers each call with its reply's values, or
    /// with the error of its index write, its own error in the library or its group's failure.
    func acquireBatch(_ calls: [AcquireCall]) async -> [Result<[RESPValue], any Error>] {
        await acquireBatch(calls, bySlot: client.isClusterMode)
    }

    /// `acquireBatch(_:)`, in one group or one per hash slot. A client that has not yet
    /// learnt that its Redis is a cluster sends one group; a cluster refuses one that spans
    /// slots before running anything (`CROSSSLOT`, or the client itself once it has learnt
    /// the map meanwhile), and the batch goes again by slot.
    private func acquireBatch(_ calls: [AcquireCall], bySlot: Bool) async -> [Result<[RESPValue], any Error>] {
        var groups: [[Int]] = []
        if bySlot {
            var groupOfSlot: [Int: Int] = [:]
            for (position, call) in calls.enumerated() {
                let slot = HashSlot.slot(of: call.keys[0])
                if let group = groupOfSlot[slot] {
                    groups[group].append(position)
                } else {
                    groupOfSlot[slot] = groups.count
                    groups.append([position])
                }
            }
        } else {
            groups = [Array(calls.indices)]
        }
        let time = now()
        if groups.count == 1 {
            let answers = await acquireGroup(calls, time: time)
            guard !bySlot, calls.count > 1 else { return answers }
            let refused = answers.allSatisfy {
                guard case .failure(let error as StoreError) = $0 else { return false }
                return error.message.contains("CROSSSLOT") || client.isClusterMode
            }
            return refused ? await acquireBatch(calls, bySlot: true) : answers
        }
        var answers = [Result<[RESPValue], any Error>](repeating: .success([]), count: calls.count)
        await withTaskGroup(of: (Int, [Result<[RESPValue], any Error>]).self) { tasks in
            for (number, group) in groups.enumerated() {
                let members = group.map { calls[$0] }
                tasks.addTask { (number, await self.acquireGroup(members, time: time)) }
            }
            for await (number, results) in tasks {
                for (position, result) in zip(groups[number], results) { answers[position] = result }
            }
        }
        return answers
    }

    /// One acquire call for `calls` (keys of one slot on a cluster), after their lease
    /// indexes' writes, in one pipelined write; see `acquireBatch`.
    private func acquireGroup(_ calls: [AcquireCall], time: String) async -> [Result<[RESPValue], any Error>] {
        var keys: [String] = []
        var arguments = [time, String(graceMilliseconds)]
        keys.reserveCapacity(5 * calls.count)
        arguments.reserveCapacity(2 + 7 * calls.count)
        var commands: [[String]] = []
        var indexed: [Int] = []
        for (position, call) in calls.enumerated() {
            keys += call.keys
            arguments += call.arguments
            if let index = call.index {
                commands.append(index)
                indexed.append(position)
            }
        }
        var answers = [Result<[RESPValue], any Error>](repeating: .success([]), count: calls.count)
        do {
            let replies = try await call(.acquire, keys: keys, arguments: arguments, after: commands)
            let reply = replies[indexed.count]
            guard case .array(let elements?) = try RedisClient.checked(reply), elements.count == calls.count else {
                throw Self.malformed([reply])
            }
            for (position, element) in elements.enumerated() {
                do {
                    guard case .array(let values?) = try RedisClient.checked(element) else { throw Self.malformed([element]) }
                    answers[position] = .success(values)
                } catch {
                    answers[position] = .failure(error)
                }
            }
            // A lease whose index was not written cannot be settled: its call fails, as a
            // single call whose index write fails does.
            for (number, position) in indexed.enumerated() {
                do { _ = try RedisClient.checked(replies[number]) } catch { answers[position] = .failure(error) }
            }
        } catch {
            return calls.map { _ in .failure(error) }
        }
        return answers
    }

    // MARK: - Encoding

    /// The hash tag's text: account and scope, percent-encoded, joined by `|`.
    static func tag(_ key: LimitKey) -> String {
        escape(key.account) + "|" + escape(key.scope)
    }

    static func key(fromTag tag: String) -> LimitKey? {
        let parts = tag.split(separator: "|", omittingEmptySubsequences: false)
        guard parts.count == 2, let account = unescape(parts[0]), let scope = unescape(parts[1]) else { return nil }
        return LimitKey(account: account, scope: scope)
    }

    private static func escape(_ text: String) -> String {
        // Most names have none of the four characters: returned as they are.
        guard text.utf8.contains(where: { $0 == 0x25 || $0 == 0x7C || $0 == 0x7B || $0 == 0x7D }) else { return text }
        var result = ""
        for character in text.unicodeScalars {
            switch character {
            case "%": result += "%25"
            case "|": result += "%7C"
            case "{": result += "%7B"
            case "}": result += "%7D"
            default: result.unicodeScalars.append(character)
            }
        }
        return result
    }

    private static func unescape(_ text: Substring) -> String? {
        var result = ""
        var rest = text[...]
        while let percent = rest.firstIndex(of: "%") {
            result += rest[..<percent]
            let code = rest[rest.index(after: percent)...].prefix(2)
            switch code {
            case "25": result += "%"
            case "7C": result += "|"
            case "7B": result += "{"
            case "7D": result += "}"
            default: return nil
            }
            rest = rest[rest.index(percent, offsetBy: 3)...]
        }
        return result + rest
    }

    /// ARGV specs: requests, tokens, concurrency, shadow.
    static func specs(_ limits: LimitSet) -> [String] {
        [spec(limits.requests), spec(limits.tokens), spec(limits.concurrency), limits.shadow ? "1" : "0"]
    }

    /// `specs(limits)`, from a cache of the limit sets seen last (a deployment has a few:
    /// one per tier, model and override), emptied when it reaches 1,024 entries.
    private func cachedSpecs(_ limits: LimitSet) -> [String] {
        if let specs = specCache.withLock({ $0[limits] }) { return specs }
        let specs = Self.specs(limits)
        specCache.withLock { cache in
            if cache.count >= 1_024 { cache.removeAll(keepingCapacity: true) }
            cache[limits] = specs
        }
        return specs
    }

    private static func spec(_ limit: Limit?) -> String {
        guard let limit else { return "" }
        let algorithm = limit.algorithm == .gcra ? "g" : "s"
        return "\(algorithm) \(limit.limit) \(limit.window) \(limit.burst)"
    }

    static func limitSet(_ specs: [String]) throws -> LimitSet {
        func limit(_ spec: String) throws -> Limit? {
            guard !spec.isEmpty else { return nil }
            let fields = spec.split(separator: " ")
            guard fields.count == 4, let value = UInt64(fields[1]), let window = UInt64(fields[2]),
                  let burst = UInt64(fields[3]), value > 0, window > 0
            else { throw malformed([spec]) }
            return Limit(algorithm: fields[0] == "g" ? .gcra : .slidingWindow, limit: value, window: window, burst: burst)
        }
        return LimitSet(
            requests: try limit(specs[0]), tokens: try limit(specs[1]), concurrency: try limit(specs[2]),
            shadow: specs[3] == "1")
    }

    /// The statuses of `limits` from the state the library returns after a call (its
    /// `state`: epoch, `now` after it, each dimension's TAT or log total and reset, the
    /// slots held), computed by the same functions as `InMemoryStore`'s (`GCRA.remaining`
    /// and `.reset`, a log's total against its limit), so both stores answer alike.
    static func statuses(_ values: ArraySlice<RESPValue>, limits: LimitSet) throws -> LimitStatuses {
        guard values.count == 7 else { throw malformed(Array(values)) }
        let first = values.startIndex
        guard let epoch = number(values[first]), epoch <= UInt64.max / Nanoseconds.perSecond,
              let after = number(values[first + 1])
        else { throw malformed(Array(values)) }
        let (now, overflow) = (epoch * Nanoseconds.perSecond).addingReportingOverflow(after)
        guard !overflow else { throw malformed(Array(values)) }
        func status(_ limit: Limit?, _ offset: Int) throws -> DimensionStatus? {
            guard let limit else { return nil }
            let value = values[first + offset]
            switch limit.algorithm {
            case .gcra:
                // The TAT: an offset from the epoch (an integer, possibly negative), or the
                // absolute time as text.
                var tat = number(value)
                if case .integer(let shift) = value {
                    let base = epoch * Nanoseconds.perSecond
                    let (sum, overflow) = shift >= 0
                        ? base.addingReportingOverflow(UInt64(shift)) : base.subtractingReportingOverflow(shift.magnitude)
                    tat = overflow ? nil : sum
                }
                guard let tat else { throw malformed(Array(values)) }
                return .gcra(limit, tat: tat, now: now)
            case .slidingWindow:
                guard let total = number(value), let reset = number(values[first + offset + 1]) else {
                    throw malformed(Array(values))
                }
                return .slidingWindow(limit, used: total, reset: reset)
            }
        }
        var concurrency: DimensionStatus?
        if let limit = limits.concurrency {
            guard let held = number(values[first + 6]) else { throw malformed(Array(values)) }
            concurrency = .concurrency(limit, held: held)
        }
        return LimitStatuses(
            requests: try status(limits.requests, 2), tokens: try status(limits.tokens, 4), concurrency: concurrency)
    }

    /// A number in a function's reply: a RESP integer (below 2^53) or decimal text (any
    /// UInt64); nil for anything else, such as the empty string of an absent value.
    static func number(_ value: RESPValue) -> UInt64? {
        switch value {
        case .integer(let integer): return integer >= 0 ? UInt64(integer) : nil
        case .bulkString(let bytes?):
            guard !bytes.isEmpty, bytes.count <= 20 else { return nil }
            var result: UInt64 = 0
            for byte in bytes {
                let digit = byte &- 48
                guard digit < 10 else { return nil }
                let (times, overflow) = result.multipliedReportingOverflow(by: 10)
                let (sum, carry) = times.addingReportingOverflow(UInt64(digit))
                guard !overflow, !carry else { return nil }
                result = sum
            }
            return result
        default: return nil
        }
    }

    private static func reason(_ text: String) throws -> DenialReason {
        guard let reason = DenialReason(rawValue: text) else { throw malformed([text]) }
        return reason
    }

    private static func malformed(_ reply: [String]) -> StoreError {
        StoreError("redis: unexpected function reply \(reply.prefix(4))", isTransient: false)
    }

    private static func malformed(_ reply: [RESPValue]) -> StoreError {
        malformed(reply.map { $0.string ?? "\($0)" })
    }
}
