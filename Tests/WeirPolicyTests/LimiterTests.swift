import Synchronization
import Testing
import WeirCore
import WeirPolicy

/// The front door: one decision per call whatever the entry, the observer told once per
/// decision (never for settlements or usage reports), completions inline in memory and
/// later for a store that suspends.
@Suite("Limiter")
struct LimiterTests {
    static let config = """
        tiers:
          - name: free
            recharge_threshold: 0
        rules:
          - name: chat
            api: text
            models: [MiniMax-M2]
            meter: tokens
            limits:
              all: {requests: 3, tokens: 100, concurrency: 1}
        """

    final class Recorder: DecisionObserver {
        let seen = Mutex<[(allowed: Bool, model: String, account: String)]>([])
        func decided(_ decision: LimitedDecision) {
            seen.withLock { $0.append((decision.decision.isAllowed, decision.model, decision.resolution.key.account)) }
        }
        var count: Int { seen.withLock { $0.count } }
    }

    static func catalogue() throws -> Catalogue {
        try Catalogue.parse(yaml: config, source: "limiter-tests.yaml")
    }

    @Test("in memory, answers are ready at once; each decision is observed once, with its model")
    func inMemoryAtOnce() async throws {
        let clock = ManualClock(start: 1)
        let recorder = Recorder()
        let limiter = Limiter(catalogue: try Self.catalogue(), store: InMemoryStore(clock: clock), observer: recorder)
        #expect(limiter.answersAtOnce)
        let resolution = try limiter.resolve(account: "a", api: "text", model: "MiniMax-M2")
        guard case .ready(let answered) = limiter.acquire(resolution, units: 10, leaseTTL: Nanoseconds.perSecond, model: "MiniMax-M2") else {
            Issue.record("an in-memory limiter answers at once")
            return
        }
        let first = try answered.get()
        #expect(first.decision.isAllowed)
        #expect(recorder.count == 1)
        // The slot is held: the next call is refused for concurrency, and observed too.
        let second = try await limiter.decide(resolution, units: 10, leaseTTL: Nanoseconds.perSecond, model: "MiniMax-M2")
        #expect(second.decision.reason == .concurrency)
        #expect(recorder.count == 2)
        // Settling frees the slot; settlements are not decisions.
        guard case .ready(let settled) = limiter.settle(try #require(first.decision.lease).id, actualUnits: 30) else {
            Issue.record("an in-memory limiter settles at once")
            return
        }
        #expect(try settled.get().settlement.charged == 20)
        #expect(recorder.count == 2)
        // A usage report is not a decision either, and counts no request.
        guard case .ready(let report) = limiter.reportUsage(resolution, units: 5) else {
            Issue.record("an in-memory limiter reports usage at once")
            return
        }
        #expect(try report.get().charged == 5)
        #expect(recorder.count == 2)
        let third = try await limiter.acquire(account: "a", api: "text", model: "MiniMax-M2", units: 0, leaseTTL: nil)
        #expect(third.decision.isAllowed)
        #expect(
            third.decision.limits.requests?.remaining == 1,
            "3 requests: the first and this one; the refused one and the report count none")
        #expect(third.decision.limits.tokens?.remaining == 100 - 30 - 5, "the first settled at 30, the report's 5")
        #expect(recorder.seen.withLock { $0.map(\.model) } == ["MiniMax-M2", "MiniMax-M2", "MiniMax-M2"])
    }

    @Test("a store that suspends: the answer comes later, once, with the decision or the store's error")
    func suspendingStore() async throws {
        let clock = ManualClock(start: 1)
        let recorder = Recorder()
        let store = SuspendingStore(InMemoryStore(clock: clock))
        let limiter = Limiter(catalogue: try Self.catalogue(), store: store, observer: recorder)
        #expect(!limiter.answersAtOnce)
        let resolution = try limiter.resolve(account: "a", api: "text", model: "MiniMax-M2")
        let pending = limiter.acquire(resolution, units: 1, leaseTTL: nil, model: "MiniMax-M2")
        guard case .later(let wait) = pending else {
            Issue.record("a suspending store answers later")
            return
        }
        #expect(recorder.count == 0, "nothing is decided before the wait starts")
        let decision = await withCheckedContinuation { done in wait { done.resume(returning: $0) } }
        #expect(try decision.get().decision.isAllowed)
        #expect(recorder.count == 1)
        store.failing = true
        guard case .later(let failing) = limiter.acquire(resolution, units: 1, leaseTTL: nil, model: "MiniMax-M2") else {
            Issue.record("a suspending store answers later")
            return
        }
        let failed = await withCheckedContinuation { done in failing { done.resume(returning: $0) } }
        #expect(throws: StoreError.self) { try failed.get() }
        #expect(recorder.count == 1, "a failed decision is no decision")
    }

    @Test("a reload applies to the next resolution; usage is kept")
    func reload() async throws {
        let clock = ManualClock(start: 1)
        let limiter = Limiter(catalogue: try Self.catalogue(), store: InMemoryStore(clock: clock))
        _ = try await limiter.acquire(account: "a", api: "text", model: "MiniMax-M2", units: 0, leaseTTL: nil)
        limiter.replaceCatalogue(try Catalogue.parse(
            yaml: Self.config.replacingOccurrences(of: "requests: 3", with: "requests: 5"), source: "reloaded.yaml"))
        let after = try await limiter.acquire(account: "a", api: "text", model: "MiniMax-M2", units: 0, leaseTTL: nil)
        #expect(after.decision.limits.requests?.limit == 5)
        #expect(after.decision.limits.requests?.remaining == 3)
        #expect(throws: ResolutionError.self) { try limiter.resolve(account: "a", api: "text", model: "nope") }
    }
}

/// An in-memory store behind a suspension point, as a remote store is; it can fail.
final class SuspendingStore: RateLimitStore, @unchecked Sendable {
    let inner: InMemoryStore
    private let state = Mutex(false)
    init(_ inner: InMemoryStore) { self.inner = inner }

    var failing: Bool {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }

    func acquire(_ request: AdmissionRequest) async throws -> Decision {
        await Task.yield()
        if failing { throw StoreError("connection refused", isTransient: true) }
        return inner.acquire(request)
    }
    func settle(_ lease: LeaseID, actualUnits: UInt64) async throws -> Settlement {
        await Task.yield()
        return try inner.settle(lease, actualUnits: actualUnits)
    }
    func status(of key: LimitKey, limits: LimitSet) async throws -> LimitStatuses {
        inner.status(of: key, limits: limits)
    }
}
