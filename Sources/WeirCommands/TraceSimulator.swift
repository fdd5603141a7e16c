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
        let limiter = Limiter(catalogue: catalogue, store: InMemoryStore(clock: clock, shardCount: 1))
        var pending = PendingSettlements()
        var output = [CSVTable.line(table.header + ["allowed", "reason", "retry_after_ms"])]
        output.reserveCapacity(table.rows.count + 1)
        var previousTime: UInt64 = 0

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

            // Leases that end at or before now are settled first, in the order they end.
            // Each lease's TTL outlives its end by 1 ns, so a settlement cannot fail; if one
            // did, the rest of the output would be wrong, so it is reported, not swallowed.
            while let due = pending.popDue(at: now) {
                clock.set(to: due.end)
                if case .failure(let error) = Self.atOnce(limiter.settle(due.lease, actualUnits: due.units)) {
                    throw TraceError(line: line, message: "internal error: settling a lease that ended at \(due.end / Nanoseconds.perMillisecond) ms failed: \(error)")
                }
            }

            let resolution: Resolution
            do {
                resolution = try limiter.resolve(account: cell("account"), api: cell("api"), model: cell("model"))
            } catch {
                throw TraceError(line: line, message: error.description)
            }

            let duration = durationMs.map { $0 * Nanoseconds.perMillisecond }
            // The TTL outlives the call by 1 ns: the simulation settles it explicitly at its end.
            clock.set(to: now)
            let decision: Decision
            switch Self.atOnce(limiter.acquire(resolution, units: units, leaseTTL: duration.map { $0 + 1 }, model: cell("model"))) {
            case .success(let limited): decision = limited.decision
            case .failure(let error): throw TraceError(line: line, message: "internal error: \(error)")
            }
            if let lease = decision.lease, let duration {
                pending.add(end: now + duration, lease: lease.id, units: units)
            }

            let allowed = decision.isAllowed
            let reason = allowed ? "" : decision.reason?.rawValue ?? ""
            let retry = allowed ? "" : decision.retryAfter.map { String(Nanoseconds.millisecondsRoundedUp($0)) } ?? ""
            output.append(CSVTable.line(fields + [allowed ? "true" : "false", reason, retry]))
        }
        return output.joined(separator: "\n") + "\n"
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
