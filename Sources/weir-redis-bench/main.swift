// weir-redis-bench: decisions per second of `RedisStore.acquire` against a running
// redis-server, with `concurrency` callers sharing one `RedisClient`.
//
//     weir-redis-bench --port 6379 [--concurrency 64] [--seconds 10] [--accounts 1000]
//                      [--connections 4] [--units 100] [--prefix weir:]
//     weir-redis-bench --print-library | --print-acquire-function
//
// Every decision is a call of the acquire function (Redis's own clock; calls made while
// others are in flight share a function call, as `RedisStore` batches them): requests
// GCRA 6,000/min and tokens GCRA 1,000,000/min per account, accounts drawn at random
// from `accounts`, the same call `bench/redis.sh` gives redis-benchmark. Each caller
// loops until the time is up (and at most 10 million calls). Prints one line:
// `decisions/s p50_us p99_us errors`. Used by bench/redis.sh; see BENCHMARKS.md.
import Foundation
import NIOCore
import WeirCore
import WeirRedis

func option(_ name: String, _ fallback: Int) -> Int {
    guard let index = CommandLine.arguments.firstIndex(of: name), index + 1 < CommandLine.arguments.count,
          let value = Int(CommandLine.arguments[index + 1]), value > 0
    else { return fallback }
    return value
}

if CommandLine.arguments.contains("--print-library") {
    print(RedisStore.library.source)
    exit(0)
}
if CommandLine.arguments.contains("--print-acquire-function") {
    print(RedisStore.library.acquireFunction)
    exit(0)
}

let port = option("--port", 6379)
let concurrency = option("--concurrency", 64)
let seconds = option("--seconds", 10)
let accounts = option("--accounts", 1_000)
let connections = option("--connections", 4)
let units = UInt64(option("--units", 100))
let prefix = CommandLine.arguments.firstIndex(of: "--prefix").map { CommandLine.arguments[$0 + 1] } ?? "weir:"
let minute = 60 * Nanoseconds.perSecond
let limits = LimitSet(
    requests: Limit(algorithm: .gcra, limit: 6_000, window: minute),
    tokens: Limit(algorithm: .gcra, limit: 1_000_000, window: minute))

let client = RedisClient(configuration: .init(
    port: port, connectionCount: connections, commandTimeout: .seconds(2), connectTimeout: .seconds(2)))
let store = RedisStore(client: client, keyPrefix: prefix)

/// One caller's tally.
struct Tally: Sendable {
    var decisions = 0
    var errors = 0
    var latencies: [UInt64] = []
}

/// `concurrency` callers for `duration`; returns their tallies.
func run(for duration: Duration, keepLatencies: Bool) async -> [Tally] {
    let deadline = ContinuousClock.now + duration
    return await withTaskGroup(of: Tally.self) { group in
        for _ in 0..<concurrency {
            group.addTask {
                var tally = Tally()
                var random = SystemRandomNumberGenerator()
                if keepLatencies { tally.latencies.reserveCapacity(200_000) }
                for call in 0..<10_000_000 {
                    if call % 16 == 0, ContinuousClock.now >= deadline { break }
                    let account = Int.random(in: 0..<accounts, using: &random)
                    let key = LimitKey(account: "acct\(account)", scope: "chat")
                    let started = DispatchTime.now().uptimeNanoseconds
                    do {
                        _ = try await store.acquire(AdmissionRequest(key: key, limits: limits, units: units))
                        tally.decisions += 1
                    } catch {
                        tally.errors += 1
                    }
                    if keepLatencies { tally.latencies.append(DispatchTime.now().uptimeNanoseconds - started) }
                }
                return tally
            }
        }
        var tallies: [Tally] = []
        for await tally in group { tallies.append(tally) }
        return tallies
    }
}

_ = await run(for: .seconds(2), keepLatencies: false)
let started = ContinuousClock.now
let tallies = await run(for: .seconds(seconds), keepLatencies: true)
let elapsed = ContinuousClock.now - started
let elapsedSeconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
let decisions = tallies.reduce(0) { $0 + $1.decisions }
let errors = tallies.reduce(0) { $0 + $1.errors }
let latencies = tallies.flatMap(\.latencies).sorted()
func percentile(_ p: Double, of sorted: [UInt64]) -> Double {
    sorted.isEmpty ? 0 : Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1_000
}
print(String(format: "%.1f %.0f %.0f %d", Double(decisions) / elapsedSeconds, percentile(0.5, of: latencies), percentile(0.99, of: latencies), errors))
await client.close()
