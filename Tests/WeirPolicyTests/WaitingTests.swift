import Synchronization
import Testing
import WeirCore
import WeirPolicy
import WeirConformance

/// Waiting instead of 429 (`Limiter.acquire(..., maxWait:)`): exact wake-ups on a
/// `ManualClock` and `ManualWaitTimer`, first come first served per key, refusals at
/// once when the bound cannot be met, settlements waking concurrency waiters,
/// cancellation, the room's bound, and never more than the limits.
@Suite("Waiting for room")
struct WaitingTests {
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
    static let second = Nanoseconds.perSecond
    static let start: UInt64 = 1_000 * second

    final class Outcomes: DecisionObserver {
        let waits = Mutex<[WaitOutcome]>([])
        let decided = Mutex(0)
        func decided(_ decision: LimitedDecision) { decided.withLock { $0 += 1 } }
        func waited(_ outcome: WaitOutcome, nanoseconds: UInt64) { waits.withLock { $0.append(outcome) } }
    }

    /// A limiter with waiting on a manual clock, and what its answers were.
    final class Harness: Sendable {
        let clock = ManualClock(start: WaitingTests.start)
        let timer: ManualWaitTimer
        let limiter: Limiter
        let outcomes = Outcomes()
        let resolution: Resolution
        /// Answers by call name, with the clock reading when each came.
        let answers = Mutex<[String: (result: Result<LimitedDecision, any Error>, at: UInt64)]>([:])
        let order = Mutex<[String]>([])

        init(maxWaiting: Int = 100) throws {
            timer = ManualWaitTimer(clock: clock)
            limiter = Limiter(
                catalogue: try Catalogue.parse(yaml: WaitingTests.config, source: "waiting.yaml"),
                store: InMemoryStore(clock: clock), observer: outcomes,
                waiting: WaitSettings(timer: timer, clock: clock, maxWaiting: maxWaiting))
            resolution = try limiter.resolve(account: "a", api: "text", model: "MiniMax-M2")
        }

        /// Sends a call; true when it was answered at once.
        @discardableResult
        func call(
            _ name: String, units: UInt64 = 1, wait: UInt64 = 0, lease: Bool = false, cancellation: WaitCancellation? = nil
        ) -> Bool {
            let record: @Sendable (Result<LimitedDecision, any Error>) -> Void = { [self] result in
                let at = clock.now()
                answers.withLock { $0[name] = (result, at) }
                order.withLock { $0.append(name) }
            }
            switch limiter.acquire(
                resolution, units: units, leaseTTL: lease ? 60 * WaitingTests.second : nil, model: "MiniMax-M2",
                maxWait: wait, cancellation: cancellation)
            {
            case .ready(let result):
                record(result)
                return true
            case .later(let wait):
                wait(record)
                return answers.withLock { $0[name] != nil }
            }
        }

        func allowed(_ name: String) -> Bool? {
            answers.withLock { $0[name] }.map { (try? $0.result.get())?.decision.isAllowed ?? false }
        }

        func decision(_ name: String) -> LimitedDecision? {
            answers.withLock { $0[name] }.flatMap { try? $0.result.get() }
        }

        func answeredAt(_ name: String) -> UInt64? { answers.withLock { $0[name]?.at } }

        func advance(to time: UInt64) {
            timer.advance(to: time)
        }
    }

    @Test("a refused call waits and is admitted at exactly its retry time")
    func exactWakeUp() throws {
        let harness = try Harness()
        for name in ["1", "2", "3"] { #expect(harness.call(name)) }
        #expect(!harness.call("waits", wait: 90 * Self.second))
        #expect(harness.limiter.waitingCalls == 1)
        harness.advance(to: Self.start + 60 * Self.second - 1)
        #expect(harness.allowed("waits") == nil)
        harness.advance(to: Self.start + 60 * Self.second)
        #expect(harness.allowed("waits") == true)
        #expect(harness.answeredAt("waits") == Self.start + 60 * Self.second)
        #expect(harness.limiter.waitingCalls == 0)
        #expect(harness.outcomes.waits.withLock { $0 } == [.admitted])
        #expect(harness.timer.pending == 0, "the deadline's timer went with it")
    }

    @Test("a call whose retry time is beyond its bound is refused at once; so is a too-large call")
    func refusedAtOnce() throws {
        let harness = try Harness()
        for name in ["1", "2", "3"] { harness.call(name) }
        #expect(harness.call("short", wait: 30 * Self.second))
        #expect(harness.allowed("short") == false)
        #expect(harness.decision("short")?.decision.retryAfter == 60 * Self.second)
        #expect(harness.call("huge", units: 1_000, wait: 300 * Self.second))
        #expect(harness.decision("huge")?.decision.reason == .tooLarge)
        #expect(harness.limiter.waitingCalls == 0)
    }

    @Test("waiting calls of a key are admitted in arrival order; a call that does not wait is decided as before")
    func firstComeFirstServed() throws {
        let harness = try Harness()
        harness.call("half", units: 50)
        // 60 tokens do not fit (50 left): waits for the window to move (60 s).
        #expect(!harness.call("A", units: 60, wait: 120 * Self.second))
        // 10 would fit, but A waits first: B queues behind it, undecided.
        #expect(!harness.call("B", units: 10, wait: 120 * Self.second))
        // A call that does not wait is decided now, as before.
        #expect(harness.call("now", units: 10))
        #expect(harness.allowed("now") == true)
        harness.advance(to: Self.start + 60 * Self.second)
        #expect(harness.allowed("A") == true)
        #expect(harness.allowed("B") == true)
        #expect(harness.order.withLock { $0 } == ["half", "now", "A", "B"])
    }

    @Test("a call that joins behind a head woken after its own bound is refused at once, with the head's retry time")
    func hopelessJoin() throws {
        let harness = try Harness()
        for name in ["1", "2", "3"] { harness.call(name) }
        #expect(!harness.call("head", wait: 100 * Self.second))
        harness.advance(to: Self.start + 20 * Self.second)
        #expect(harness.call("late", wait: 10 * Self.second))
        #expect(harness.allowed("late") == false)
        #expect(harness.decision("late")?.decision.retryAfter == 40 * Self.second)
        #expect(harness.outcomes.waits.withLock { $0 } == [.refused])
    }

    @Test("a call refused for concurrency is woken by the settlement that frees the slot, or refused at its bound")
    func concurrency() throws {
        let harness = try Harness()
        harness.call("holder", lease: true)
        let lease = try #require(harness.decision("holder")?.decision.lease)
        #expect(!harness.call("next", wait: 10 * Self.second, lease: true))
        guard case .ready = harness.limiter.settle(lease.id, actualUnits: 1) else {
            Issue.record("in memory, settling is at once")
            return
        }
        #expect(harness.allowed("next") == true)
        #expect(harness.decision("next")?.decision.lease != nil)

        #expect(!harness.call("after", wait: 10 * Self.second, lease: true))
        harness.advance(to: Self.start + 10 * Self.second)
        #expect(harness.allowed("after") == false)
        #expect(harness.decision("after")?.decision.reason == .concurrency)
        #expect(harness.limiter.waitingCalls == 0)
    }

    @Test("a caller that goes away stops waiting and holds nothing; the next in line goes on")
    func cancellation() throws {
        let harness = try Harness()
        for name in ["1", "2", "3"] { harness.call(name) }
        let gone = WaitCancellation()
        #expect(!harness.call("gone", wait: 120 * Self.second, cancellation: gone))
        #expect(!harness.call("stays", wait: 120 * Self.second))
        gone.cancel()
        let cancelled = harness.answers.withLock { $0["gone"]?.result }
        #expect(throws: WaitCancelled.self) { try cancelled?.get() }
        #expect(harness.limiter.waitingCalls == 1)
        harness.advance(to: Self.start + 60 * Self.second)
        #expect(harness.allowed("stays") == true)
        gone.cancel()
        #expect(harness.outcomes.waits.withLock { $0 } == [.cancelled, .admitted])

        // Cancelled before its wait began: answered at once, nothing queued.
        let slot = try Harness()
        slot.call("holder", lease: true)
        let leaving = WaitCancellation()
        leaving.cancel()
        #expect(slot.call("leaving", wait: 10 * Self.second, lease: true, cancellation: leaving))
        let answer = slot.answers.withLock { $0["leaving"]?.result }
        #expect(throws: WaitCancelled.self) { try answer?.get() }
        #expect(slot.limiter.waitingCalls == 0)
        #expect(slot.timer.pending == 0)
    }

    @Test("beyond the room's bound a call is refused at once")
    func overflow() throws {
        let harness = try Harness(maxWaiting: 2)
        for name in ["1", "2", "3"] { harness.call(name) }
        #expect(!harness.call("a", wait: 120 * Self.second))
        #expect(!harness.call("b", wait: 120 * Self.second))
        #expect(harness.call("c", wait: 120 * Self.second))
        #expect(harness.allowed("c") == false)
        #expect(harness.outcomes.waits.withLock { $0 } == [.overflow])
    }

    @Test("with a store that answers later (as Redis does): the waiter is decided again at its retry time, and answered when that decision comes")
    func laterStore() async throws {
        let clock = ManualClock(start: Self.start)
        let timer = ManualWaitTimer(clock: clock)
        let limiter = Limiter(
            catalogue: try Catalogue.parse(yaml: Self.config, source: "waiting.yaml"),
            store: SuspendingStore(InMemoryStore(clock: clock)),
            waiting: WaitSettings(timer: timer, clock: clock))
        let resolution = try limiter.resolve(account: "a", api: "text", model: "MiniMax-M2")
        func answer(_ pending: Pending<Result<LimitedDecision, any Error>>) async -> Result<LimitedDecision, any Error> {
            switch pending {
            case .ready(let result): return result
            case .later(let wait): return await withCheckedContinuation { done in wait { done.resume(returning: $0) } }
            }
        }
        for _ in 1...3 {
            #expect(try await answer(limiter.acquire(resolution, units: 1, leaseTTL: nil, model: "MiniMax-M2")).get().decision.isAllowed)
        }
        guard case .later(let wait) = limiter.acquire(
            resolution, units: 1, leaseTTL: nil, model: "MiniMax-M2", maxWait: 90 * Self.second)
        else {
            Issue.record("a store that suspends answers later")
            return
        }
        let answered = Task { await withCheckedContinuation { done in wait { done.resume(returning: $0) } } }
        await timer.waitForPending(2)
        #expect(limiter.waitingCalls == 1)
        timer.advance(to: Self.start + 60 * Self.second)
        let result = await answered.value
        #expect(try result.get().decision.isAllowed)
        #expect(limiter.waitingCalls == 0)
        #expect(timer.pending == 0)
    }

    @Test("random calls, waits, cancellations and clock moves: never more than the limits, every call answered once and within its bound")
    func randomized() throws {
        var generator = SeededGenerator(seed: 0x5eed_ca11)
        for round in 0..<40 {
            let harness = try Harness(maxWaiting: 8)
            var deadlines: [String: UInt64] = [:]
            var cancellations: [String: WaitCancellation] = [:]
            var leases: [LeaseID] = []
            for index in 0..<60 {
                let name = "\(round)-\(index)"
                let units = UInt64.random(in: 1...60, using: &generator)
                let wait = Bool.random(using: &generator) ? UInt64.random(in: 1...90, using: &generator) * Self.second : 0
                let withLease = Int.random(in: 0..<4, using: &generator) == 0
                let cancellation = WaitCancellation()
                cancellations[name] = cancellation
                deadlines[name] = harness.clock.now() + wait
                harness.call(name, units: units, wait: wait, lease: withLease, cancellation: cancellation)
                if let lease = harness.decision(name)?.decision.lease { leases.append(lease.id) }
                switch Int.random(in: 0..<6, using: &generator) {
                case 0: cancellations.randomElement(using: &generator)?.value.cancel()
                case 1:
                    if !leases.isEmpty {
                        _ = harness.limiter.settle(leases.removeFirst(), actualUnits: UInt64.random(in: 0...60, using: &generator))
                    }
                default: break
                }
                harness.advance(to: harness.clock.now() + UInt64.random(in: 0...20, using: &generator) * Self.second)
            }
            harness.advance(to: harness.clock.now() + 200 * Self.second)
            let answers = harness.answers.withLock { $0 }
            #expect(answers.count == 60, "round \(round): every call answered")
            #expect(harness.order.withLock { $0.count } == 60, "round \(round): each once")
            #expect(harness.limiter.waitingCalls == 0)
            #expect(harness.timer.pending == 0)
            // Never over the limits: 3 requests in any 60 s (sliding window), counted
            // from the admissions' times.
            let admitted = answers.compactMap { name, answer -> UInt64? in
                guard case .success(let limited) = answer.result, limited.decision.isAllowed else { return nil }
                #expect(answer.at <= deadlines[name]!, "round \(round): \(name) answered within its bound")
                return answer.at
            }.sorted()
            for (index, time) in admitted.enumerated() where index >= 3 {
                #expect(time - admitted[index - 3] >= 60 * Self.second, "round \(round): 4 admissions within 60 s")
            }
        }
    }
}

extension WaitingTests {
    @Test("TaskWaitTimer runs a body whose deadline has passed at once, and not one that was cancelled")
    func taskWaitTimer() async throws {
        let clock = ManualClock(start: 100)
        let timer = TaskWaitTimer(clock: clock)
        let ran = AsyncStream.makeStream(of: String.self)
        // Deadlines at or before the clock's reading: no sleep.
        _ = timer.schedule(at: 50) { ran.continuation.yield("past") }
        // A far deadline, cancelled: never runs.
        let cancelled = timer.schedule(at: UInt64.max) { ran.continuation.yield("cancelled") }
        cancelled.cancel()
        var iterator = ran.stream.makeAsyncIterator()
        #expect(await iterator.next() == "past")
    }
}
