import Synchronization
import WeirCore
import WeirPolicy

/// Replays a CSV trace of calls against a catalogue on a simulated clock and reports
/// each decision: DESIGN.md "Contracts / Simulation".
///
/// Input: a header with `time_ms,account,api,model,units` and optionally `duration_ms`
/// (any order; other columns are carried through), rows in time order. Output: the input
/// columns plus `allowed` (`true`/`false`), `reason` (empty when allowed) and
/// `retry_after_ms` (empty when allowed, when `too_large`, or when only concurrency denies).
///
/// - A call with `duration_ms` holds a lease (and, where the rule limits concurrency, a
///   slot) for that long, then settles with the same units. Leases ending at t are
///   settled before the calls at t are decided. A call without it takes no lease.
/// - `reason` is the first denying dimension in the order requests, tokens, concurrency;
///   `too_large` when the units alone exceed the rule's token limit.
/// - `retry_after_ms` is the exact wait until every denying time-window dimension would
///   fit, in milliseconds rounded up.
/// - Accounts not in the catalogue are in the lowest tier.
/// - With a `max_wait_ms` column, a call with a value above 0 may wait that long for
///   room instead of being refused (the `Limiter`'s waiting: woken at its exact retry
///   time, first come first served per budget); an empty value means its rule's
///   `max_wait`, as on the server, and 0 no wait. The output then has one more column,
///   `waited_ms`: how long the call waited for its answer (0 when answered at once), in
///   milliseconds rounded up. A call admitted after waiting holds its lease from then.
///   A catalogue whose rules wait by default replays waits (and adds `waited_ms`) even
///   without the column.
///
/// Decides through a `Limiter` (the front door every shape uses) over an in-memory store
/// on a manual clock, set to each row's time before it is decided.
///
/// Deterministic: the same catalogue and trace always give the same output.
public struct TraceSimulator: Sendable {
    public var catalogue: Catalogue

    public init(catalogue: Catalogue) {
        self.catalogue = catalogue
    }

    /// A problem with the trace, naming its line.
    public struct TraceError: Error, Sendable, CustomStringConvertible {
        public var line: Int
        public var message: String

        public var description: String { "line \(line): \(message)" }
    }

    static let requiredColumns = ["time_ms", "account", "api", "model", "units"]

    /// Simulates `trace` (CSV text) and returns the output CSV text.
    public func run(trace: String) throws(TraceError) -> String {
        let table: CSVTable
        do {
            table = try CSVTable.parse(trace)
        } catch {
            throw TraceError(line: error.line, message: error.message)
        }
        var column: [String: Int] = [:]
        for (index, name) in table.header.enumerated() {
            let name = name.trimmingWhitespace()
            guard column[name] == nil else { throw TraceError(line: 1, message: "column `\(name)` appears twice") }
            column[name] = index
        }
        let missing = Self.requiredColumns.filter { column[$0] == nil }
        guard missing.isEmpty else {
            throw TraceError(line: 1, message: "the header lacks \(missing.map { "`\($0)`" }.joined(separator: ", ")); expected time_ms,account,api,model,units[,duration_ms]")
        }

        let clock = ManualClock()
        let timer = ManualWaitTimer(clock: clock)
        let waits = column["max_wait_ms"] != nil || catalogue.waitsByDefault
        let limiter = Limiter(
            catalogue: catalogue, store: InMemoryStore(clock: clock, shardCount: 1),
            waiting: waits ? WaitSettings(timer: timer, clock: clock, maxWaiting: Int.max) : nil)
        let state = SimulationState()
        let header = table.header + ["allowed", "reason", "retry_after_ms"] + (waits ? ["waited_ms"] : [])
        var previousTime: UInt64 = 0

        /// Moves the clock to `time`, settling the leases that end and waking the calls
        /// whose retry time comes on the way, in time order (leases first at a tie).
        func advance(to time: UInt64, line: Int) throws(TraceError) {
            while true {
                let leaseEnd = state.settlements.withLock { $0.nextEnd }
                let wake = timer.nextDeadline
                if let end = leaseEnd, end <= time, wake.map({ end <= $0 }) ?? true {
                    let due = state.settlements.withLock { $0.popDue(at: end)! }
                    clock.set(to: max(due.end, clock.now()))
                    // Each lease's TTL outlives its end by 1 ns, so a settlement cannot
                    // fail; if one did, the rest of the output would be wrong, so it is
                    // reported, not swallowed.
                    if case .failure(let error) = Self.atOnce(limiter.settle(due.lease, actualUnits: due.units)) {
                        throw TraceError(line: line, message: "internal error: settling a lease that ended at \(due.end / Nanoseconds.perMillisecond) ms failed: \(error)")
                    }
                } else if let wake, wake <= time {
                    clock.set(to: max(wake, clock.now()))
                    timer.runDue()
                } else {
                    break
                }
            }
            clock.set(to: max(time, clock.now()))
        }

        for (line, fields) in table.rows {
            guard fields.count == table.header.count else {
                throw TraceError(line: line, message: "\(fields.count) fields where the header has \(table.header.count)")
            }
            func cell(_ name: String) -> String { fields[column[name]!].trimmingWhitespace() }
            func integer(_ name: String, optional: Bool = false) throws(TraceError) -> UInt64? {
                let text = cell(name)
                if text.isEmpty, optional { return nil }
                guard let value = UInt64(text), value <= UInt64.max / Nanoseconds.perMillisecond else {
                    throw TraceError(line: line, message: "`\(name)` must be a non-negative integer, got `\(text)`")
                }
                return value
            }

            let timeMs = try integer("time_ms")!
            guard timeMs >= previousTime else {
                throw TraceError(line: line, message: "rows must be in time order: \(timeMs) comes after \(previousTime)")
            }
            previousTime = timeMs
            let now = timeMs * Nanoseconds.perMillisecond
            let units = cell("units").isEmpty ? 0 : try integer("units")!
            let durationMs = column["duration_ms"] == nil ? nil : try integer("duration_ms", optional: true)

            // Leases that end and waiting calls whose time comes at or before now go
            // first, in time order.
            try advance(to: now, line: line)
            let askedWait = column["max_wait_ms"] == nil ? nil : try integer("max_wait_ms", optional: true)

            let resolution: Resolution
            do {
                resolution = try limiter.resolve(account: cell("account"), api: cell("api"), model: cell("model"))
            } catch {
                throw TraceError(line: line, message: error.description)
            }

            let maxWait = waits ? askedWait.map { $0 * Nanoseconds.perMillisecond } ?? resolution.rule.maxWait ?? 0 : 0
            let duration = durationMs.map { $0 * Nanoseconds.perMillisecond }
            // The TTL outlives the call by 1 ns: the simulation settles it explicitly at its end.
            let row = state.answers.withLock { answers in
                answers.append(nil)
                return answers.count - 1
            }
            let answered: @Sendable (Result<LimitedDecision, any Error>) -> Void = { result in
                let at = clock.now()
                if case .success(let limited) = result, let lease = limited.decision.lease, let duration {
                    state.settlements.withLock { $0.add(end: at + duration, lease: lease.id, units: units) }
                }
                state.answers.withLock { $0[row] = Answer(result: result, waited: at - now) }
            }
            switch limiter.acquire(
                resolution, units: units, leaseTTL: duration.map { $0 + 1 }, model: cell("model"), maxWait: maxWait)
            {
            case .ready(let result): answered(result)
            case .later(let wait): wait(answered)
            }
            state.rows.withLock { $0.append((line, fields)) }
        }
        // Every call still waiting is answered by its bound at the latest.
        try advance(to: UInt64.max, line: table.rows.last?.line ?? 1)

        var output = [CSVTable.line(header)]
        output.reserveCapacity(table.rows.count + 1)
        let answers = state.answers.withLock { $0 }
        for ((line, fields), answer) in zip(state.rows.withLock { $0 }, answers) {
            guard let answer else { throw TraceError(line: line, message: "internal error: the call was never answered") }
            let decision: Decision
            switch answer.result {
            case .success(let limited): decision = limited.decision
            case .failure(let error): throw TraceError(line: line, message: "internal error: \(error)")
            }
            let allowed = decision.isAllowed
            let reason = allowed ? "" : decision.reason?.rawValue ?? ""
            let retry = allowed ? "" : decision.retryAfter.map { String(Nanoseconds.millisecondsRoundedUp($0)) } ?? ""
            let waited = waits ? [String(Nanoseconds.millisecondsRoundedUp(answer.waited))] : []
            output.append(CSVTable.line(fields + [allowed ? "true" : "false", reason, retry] + waited))
        }
        return output.joined(separator: "\n") + "\n"
    }

    /// A call's answer, and how long after its row's time it came.
    struct Answer: Sendable {
        var result: Result<LimitedDecision, any Error>
        var waited: UInt64
    }

    /// What the replay keeps while calls wait: answers come from the limiter's
    /// completions (run on this thread, by the manual clock and timer).
    final class SimulationState: Sendable {
        let answers = Mutex<[Answer?]>([])
        let rows = Mutex<[(line: Int, fields: [String])]>([])
        let settlements = Mutex(PendingSettlements())
    }

    /// The result of a limiter call whose store is in memory: always ready.
    private static func atOnce<Value: Sendable>(_ pending: Pending<Result<Value, any Error>>) -> Result<Value, any Error> {
        guard case .ready(let result) = pending else { preconditionFailure("an in-memory limiter answered later") }
        return result
    }
}

/// Leases waiting to end, earliest first; ties in the order they were taken.
struct PendingSettlements {
    struct Entry {
        var end: UInt64
        var sequence: Int
        var lease: LeaseID
        var units: UInt64
    }

    /// Sorted latest first, so the earliest is `last`.
    private var entries: [Entry] = []
    private var sequence = 0

    /// When the earliest lease ends.
    var nextEnd: UInt64? { entries.last?.end }

    mutating func add(end: UInt64, lease: LeaseID, units: UInt64) {
        let entry = Entry(end: end, sequence: sequence, lease: lease, units: units)
        sequence += 1
        // Binary search for the first entry that ends no later (descending order).
        var low = 0
        var high = entries.count
        while low < high {
            let middle = (low + high) / 2
            let other = entries[middle]
            if other.end > end || (other.end == end && other.sequence > entry.sequence) {
                low = middle + 1
            } else {
                high = middle
            }
        }
        entries.insert(entry, at: low)
    }

    mutating func popDue(at now: UInt64) -> Entry? {
        guard let last = entries.last, last.end <= now else { return nil }
        return entries.removeLast()
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() }
        while let last = scalars.last, last == " " || last == "\t" { scalars.removeLast() }
        return String(scalars)
    }
}
