// weir-bench: decisions per second of the in-memory store, and resident bytes per key.
//
//     swift run -c release weir-bench [--quick]
//
// Every figure is printed with its ratio to a baseline measured in the same run: one
// `Mutex<[String: UInt64]>` increment per operation, the least any locked, keyed
// limiter can do. Loops are bounded by operation count. See BENCHMARKS.md.
import Dispatch
import Foundation
import Synchronization
import WeirConformance
import WeirCore
import WeirPolicy
import WeirServer

let quick = CommandLine.arguments.contains("--quick")
/// `--only WORD`: run only the scenarios whose name contains WORD (for profiling).
let only: String? = CommandLine.arguments.firstIndex(of: "--only").flatMap {
    $0 + 1 < CommandLine.arguments.count ? CommandLine.arguments[$0 + 1] : nil
}

func selected(_ name: String) -> Bool { only.map { name.contains($0) } ?? true }
let operations = quick ? 1_000_000 : 10_000_000
let clock = SystemClock()
let minute = 60 * Nanoseconds.perSecond

/// Runs `body` on `threads` threads, `operations` calls each; returns calls per second.
func measure(threads: Int = 1, _ body: @Sendable @escaping (_ thread: Int, _ iteration: Int) -> Void) -> Double {
    // Warm up caches and the allocator.
    DispatchQueue.concurrentPerform(iterations: threads) { thread in
        for iteration in 0..<(operations / 10) { body(thread, iteration) }
    }
    let start = clock.now()
    DispatchQueue.concurrentPerform(iterations: threads) { thread in
        for iteration in 0..<operations { body(thread, iteration) }
    }
    let elapsed = Double(clock.now() - start) / 1e9
    return Double(operations * threads) / elapsed
}

func residentBytes() -> Int {
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = statm.split(separator: " ")
    return (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
}

func keys(_ count: Int, prefix: String) -> [LimitKey] {
    // Account ids like "acct_1234567" (12 bytes) stay inline in String; the scope is shared.
    let scope = "text/MiniMax-M2"
    return (0..<count).map { LimitKey(account: "\(prefix)\($0)", scope: scope) }
}

func limits(_ algorithm: Algorithm, requests: UInt64, tokens: UInt64, window: UInt64 = minute) -> LimitSet {
    LimitSet(
        requests: Limit(algorithm: algorithm, limit: requests, window: window),
        tokens: Limit(algorithm: algorithm, limit: tokens, window: window))
}

func row(_ name: String, _ rate: Double, baseline: Double) {
    let padded = name.padding(toLength: 58, withPad: " ", startingAt: 0)
    print("\(padded) \(String(format: "%7.2f", rate / 1e6)) M/s   \(String(format: "%5.2f", rate / baseline))x baseline")
}

print("weir-bench: \(operations) operations per thread per scenario, release build")
print("")

// Memory first, before other scenarios leave freed memory for the allocator to reuse.
// Resident bytes per key: 1,000,000 GCRA keys, each with one call in its window.
if selected("memory") {
    let count = 1_000_000
    let accounts = keys(count, prefix: "acct_")
    let store = InMemoryStore()
    // 5 requests per minute: one call keeps a key busy for 12 s, longer than the loop.
    let gcra = limits(.gcra, requests: 5, tokens: 20_000_000)
    let before = residentBytes()
    for key in accounts { _ = store.acquire(AdmissionRequest(key: key, limits: gcra, units: 100)) }
    let after = residentBytes()
    print("resident bytes per GCRA key (\(store.keyCount) keys): \((after - before) / count)")
    let sliding = InMemoryStore()
    let window = limits(.slidingWindow, requests: 500, tokens: 20_000_000)
    let beforeSliding = residentBytes()
    for key in accounts { _ = sliding.acquire(AdmissionRequest(key: key, limits: window, units: 100)) }
    let afterSliding = residentBytes()
    print("resident bytes per sliding-window key, one call logged (\(sliding.keyCount) keys): \((afterSliding - beforeSliding) / count)")
    withExtendedLifetime((store, sliding, accounts)) {}
    print("")
}

// Baseline: a locked dictionary increment on a hot key.
let baselineMap = Mutex<[String: UInt64]>([:])
let baselineKey = "acct_1/text/MiniMax-M2"
let baseline = measure { _, _ in
    baselineMap.withLock { $0[baselineKey, default: 0] &+= 1 }
}
row("baseline: Mutex<[String: UInt64]> increment, hot key", baseline, baseline: baseline)
// The machine's own two-thread scaling: each thread on its own map, nothing shared.
final class PrivateMap: Sendable {
    let map = Mutex<[String: UInt64]>([:])
    // Two cache lines of padding: the two maps must not share a line.
    let padding: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                  UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
}
let privateMaps = [PrivateMap(), PrivateMap()]
// A key string per thread too: sharing one would bounce its reference count between cores.
let privateKeys = ["acct_1/text/MiniMax-M2-a", "acct_1/text/MiniMax-M2-b"].map { String($0.utf8) }
let baselineTwo = measure(threads: 2) { thread, _ in
    privateMaps[thread].map.withLock { $0[privateKeys[thread], default: 0] &+= 1 }
}
row("baseline, 2 threads, one private map each", baselineTwo, baseline: baseline)
print("    2 threads / 1 thread: \(String(format: "%.2f", baselineTwo / baseline))x (what this machine allows)")

let hot = LimitKey(account: "acct_1", scope: "text/MiniMax-M2")
for algorithm in [Algorithm.gcra, .slidingWindow] {
    let store = InMemoryStore()
    // Mostly allowed: a high limit (GCRA: 10^12 per minute; sliding window: 10^5 per 10 ms,
    // so the log holds ~50,000 live entries and prunes on every call).
    let open = algorithm == .gcra
        ? limits(.gcra, requests: 1_000_000_000_000, tokens: 1_000_000_000_000_000)
        : limits(.slidingWindow, requests: 100_000, tokens: 100_000_000, window: 10 * Nanoseconds.perMillisecond)
    if selected("hot-\(algorithm.rawValue)-allowed") {
    let allowed = measure { _, _ in
        _ = store.acquire(AdmissionRequest(key: hot, limits: open, units: 100))
    }
    row("hot key, \(algorithm.rawValue), mostly allowed, 1 thread", allowed, baseline: baseline)
    }
    // At the limit: the paid tier of MiniMax-M2-Stable (500 RPM, 20M TPM); almost all denied.
    let paid = limits(algorithm, requests: 500, tokens: 20_000_000)
    if selected("hot-\(algorithm.rawValue)-denied") {
    let denied = measure { _, _ in
        _ = store.acquire(AdmissionRequest(key: LimitKey(account: "acct_2", scope: "text/MiniMax-M2"), limits: paid, units: 100))
    }
    row("hot key, \(algorithm.rawValue), at the limit (denied), 1 thread", denied, baseline: baseline)
    }
}

let keyCount = 100_000
let shardCount = CommandLine.arguments.firstIndex(of: "--shards").map { Int(CommandLine.arguments[$0 + 1]) ?? 64 } ?? 64
for algorithm in [Algorithm.gcra, .slidingWindow] where selected("spread-\(algorithm.rawValue)") {
    let store = InMemoryStore(shardCount: shardCount)
    let paid = limits(algorithm, requests: 500, tokens: 20_000_000)
    // Keys in a fixed pseudo-random order, read sequentially: a server builds each key
    // from its request, so only the store's own memory accesses should miss the cache.
    var generator = SeededGenerator(seed: 42)
    let spread = [keys(keyCount, prefix: "a_").shuffled(using: &generator),
                  keys(keyCount, prefix: "b_").shuffled(using: &generator)]
    let one = measure { _, iteration in
        _ = store.acquire(AdmissionRequest(key: spread[0][iteration % keyCount], limits: paid, units: 100))
    }
    row("100,000 keys, \(algorithm.rawValue), 1 thread", one, baseline: baseline)
    let two = measure(threads: 2) { thread, iteration in
        _ = store.acquire(AdmissionRequest(key: spread[thread][iteration % keyCount], limits: paid, units: 100))
    }
    row("100,000 keys, \(algorithm.rawValue), 2 threads (distinct keys)", two, baseline: baseline)
    print("    2 threads / 1 thread: \(String(format: "%.2f", two / one))x")
}


// The dashboard's refusal history on the denial path: what `weir serve` adds to a denied
// decision (one `RefusalHistory.record`), against the denied decision alone. Allowed
// decisions record nothing. Then the worst case: every denial from a new account, with
// far more accounts than the history keeps (4096), so it keeps forgetting the oldest.
if selected("refusal-history") {
    let store = InMemoryStore()
    let history = RefusalHistory(clock: clock)
    let paid = limits(.gcra, requests: 500, tokens: 20_000_000)
    let key = LimitKey(account: "acct_3", scope: "text/MiniMax-M2")
    let plain = measure { _, _ in
        _ = store.acquire(AdmissionRequest(key: key, limits: paid, units: 100))
    }
    row("hot key, gcra, denied, no history", plain, baseline: baseline)
    let recorded = measure { _, _ in
        let decision = store.acquire(AdmissionRequest(key: key, limits: paid, units: 100))
        if !decision.isAllowed { history.record(account: key.account, reason: decision.reason ?? .requests) }
    }
    row("hot key, gcra, denied + RefusalHistory.record", recorded, baseline: baseline)
    print("    with history / without: \(String(format: "%.2f", recorded / plain))x")
    let alone = measure { _, _ in history.record(account: key.account, reason: .requests) }
    row("RefusalHistory.record alone, one account", alone, baseline: baseline)
    let churn = keys(100_000, prefix: "c_").map(\.account)
    let churning = measure { _, iteration in
        history.record(account: churn[iteration % churn.count], reason: .requests)
    }
    row("RefusalHistory.record, 100,000 accounts in turn (cap 4096)", churning, baseline: baseline)
    print("    accounts tracked after: \(history.trackedAccounts)")
}

// Stalls while leases pile up: what `bench/serve.sh`'s allowed run does to the store
// (300 accounts, every call allowed with a one-minute lease, none settled), 1,000,000
// calls on one thread. Each call is timed; the figures are the slowest calls and the
// time spent in calls over 50 µs, against the same calls without a lease (baseline in
// the same run). A table that grows by rehashing stalls every shard at about the same
// count, which shows here as a few calls of a millisecond and more.
if selected("lease-stalls") {
    let calls = quick ? 300_000 : 1_000_000
    let accounts = keys(300, prefix: "bench-")
    let free = LimitSet(
        requests: Limit(algorithm: .gcra, limit: 1_000_000_000, window: minute),
        tokens: Limit(algorithm: .gcra, limit: 1_000_000_000_000, window: minute))
    func stalls(leases: Bool) -> (p999: UInt64, max: UInt64, over50us: Int, stalled: UInt64, rate: Double) {
        let store = InMemoryStore(clock: clock)
        var times = [UInt64](repeating: 0, count: calls)
        let ttl: UInt64? = leases ? minute : nil
        let start = clock.now()
        for index in 0..<calls {
            let before = clock.now()
            _ = store.acquire(AdmissionRequest(key: accounts[index % accounts.count], limits: free, units: 100, leaseTTL: ttl))
            times[index] = clock.now() - before
        }
        let elapsed = Double(clock.now() - start) / 1e9
        let slow = times.filter { $0 > 50_000 }
        let sorted = times.sorted()
        return (sorted[calls * 999 / 1000], sorted[calls - 1], slow.count, slow.reduce(0, +), Double(calls) / elapsed)
    }
    for (name, leases) in [("no lease (baseline)", false), ("one-minute lease each", true)] {
        let result = stalls(leases: leases)
        print(
            "\(calls) calls, 300 accounts, \(name): \(String(format: "%.2f", result.rate / 1e6)) M/s, p99.9 \(result.p999) ns, "
                + "slowest \(String(format: "%.2f", Double(result.max) / 1e6)) ms, \(result.over50us) calls over 50 µs "
                + "(\(String(format: "%.2f", Double(result.stalled) / 1e6)) ms in them)")
    }
    print("")
}

// Calls waiting for room (`max_wait_ms`): what each one holds while it waits, and how
// fast waiting calls are woken and admitted. N budgets of 1 request a minute, each
// used once; then one waiting call on each (the head of its budget's queue, with a
// deadline and a wake-up scheduled on a `ManualWaitTimer`, whose entries count in the
// figure as NIO's scheduled tasks would); then the clock moves a minute and every
// call is woken and admitted. Resident bytes from /proc, before and after queueing.
if selected("waiting") {
    let count = quick ? 20_000 : 100_000
    let manual = ManualClock(start: minute)
    let timer = ManualWaitTimer(clock: manual)
    let catalogue = try! Catalogue.parse(yaml: """
        tiers:
          - name: free
            recharge_threshold: 0
        rules:
          - name: chat
            api: text
            models: [MiniMax-M2]
            limits:
              all: {requests: 1}
        """, source: "weir-bench")
    let limiter = Limiter(
        catalogue: catalogue, store: InMemoryStore(clock: manual),
        waiting: WaitSettings(timer: timer, clock: manual, maxWaiting: count))
    let resolutions = (0..<count).map { try! limiter.resolve(account: "wait-\($0)", api: "text", model: "MiniMax-M2") }
    for resolution in resolutions { _ = limiter.acquire(resolution, units: 0, leaseTTL: nil, model: "MiniMax-M2") }
    let admitted = Atomic<Int>(0)
    let before = residentBytes()
    for resolution in resolutions {
        if case .later(let wait) = limiter.acquire(resolution, units: 0, leaseTTL: nil, model: "MiniMax-M2", maxWait: 2 * minute) {
            wait { result in if (try? result.get())?.decision.isAllowed == true { admitted.add(1, ordering: .relaxed) } }
        }
    }
    let after = residentBytes()
    print("\(count) calls waiting: \(limiter.waitingCalls) in the room, \((after - before) / count) resident bytes each (with 2 timer entries)")
    let start = clock.now()
    timer.advance(to: manual.now() + minute)
    let elapsed = Double(clock.now() - start) / 1e9
    print("woken and admitted at their retry time: \(admitted.load(ordering: .relaxed)) in \(String(format: "%.1f", elapsed * 1000)) ms, "
        + "\(String(format: "%.2f", Double(count) / elapsed / 1e6)) M/s (one thread); waiting after: \(limiter.waitingCalls)")
    print("")
}
