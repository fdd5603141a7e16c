import Synchronization
import WeirCore

/// The calls waiting for room on their keys instead of being refused (`Limiter`,
/// `maxWait`): one first-in-first-out queue per key.
///
/// **Exact wake-ups, no polling.** The first call of a key's queue (its head) is
/// decided again at exactly the retry time its last refusal gave (a `WaitTimer`), or
/// as soon as a lease of the key is settled through the limiter (a slot freed, tokens
/// refunded: room may have come early). Admitted, it leaves the queue and the next
/// call is decided at once; refused again with a retry time within its bound, it is
/// woken then; otherwise it is refused. Every attempt is one decision of the store, so
/// waiting never admits more than the limits, in memory or on Redis (where another
/// instance may take the room first: the head is then woken at the new retry time).
///
/// **Bounds.** A call that joins a queue whose head is woken after the call's own bound
/// is refused at once. Each call has a deadline (its bound): reached while still
/// queued, the call is decided once more and answered either way. At most `capacity`
/// calls wait at once; beyond that a call is refused at once. A cancelled call
/// (`WaitCancellation`) leaves at once; if a decision admitted it meanwhile, that
/// decision comes with the `.cancelled` answer, for the limiter to give back.
///
/// Concurrency: thread-safe. One lock guards the queues; decisions are made outside it.
final class WaitRoom: Sendable {
    typealias Attempt = @Sendable () -> Pending<Result<LimitedDecision, any Error>>
    /// The answer and how the wait ended. With `.cancelled`, the result is the decision
    /// that admitted the call while it was being cancelled (its lease is to be given
    /// back), else `WaitCancelled`.
    typealias Answer = @Sendable (Result<LimitedDecision, any Error>, WaitOutcome) -> Void

    let timer: any WaitTimer
    let clock: any NanosecondClock
    /// The most calls waiting at once.
    let capacity: Int
    private let state = Mutex<[LimitKey: [Waiter]]>([:])
    private let waiting = Atomic<Int>(0)

    /// One waiting call. Its mutable fields are guarded by the room's lock.
    final class Waiter: @unchecked Sendable {
        enum Phase { case queued, deciding, done }

        let key: LimitKey
        /// When the caller stops waiting (the limiter's clock, nanoseconds).
        let deadline: UInt64
        let attempt: Attempt
        let answer: Answer
        var phase = Phase.queued
        /// When the head is woken next for a retry time (nil: by a settlement only).
        var wakeAt: UInt64?
        var wake: WaitTimerHandle?
        var expiry: WaitTimerHandle?
        /// The deadline has come: the decision under way is the last.
        var isFinal = false
        var isCancelled = false
        /// The last refusal, for a call that joins behind and cannot wait long enough
        /// (the decision alone: the joining call has its own resolution).
        var lastDenial: Decision?

        init(key: LimitKey, deadline: UInt64, attempt: @escaping Attempt, answer: @escaping Answer) {
            self.key = key
            self.deadline = deadline
            self.attempt = attempt
            self.answer = answer
        }
    }

    init(timer: any WaitTimer, clock: any NanosecondClock, capacity: Int) {
        self.timer = timer
        self.clock = clock
        self.capacity = capacity
    }

    /// Calls waiting now.
    var count: Int { waiting.load(ordering: .relaxed) }

    /// Calls waiting now, by account.
    func waitingByAccount() -> [String: Int] {
        guard count > 0 else { return [:] }
        return state.withLock { queues in
            var counts: [String: Int] = [:]
            for (key, queue) in queues { counts[key.account, default: 0] += queue.count }
            return counts
        }
    }

    /// Whether calls wait on `key` (new waiting calls of the key queue behind them).
    func hasQueue(for key: LimitKey) -> Bool {
        guard count > 0 else { return false }
        return state.withLock { $0[key] != nil }
    }

    /// How a call refused with `denial` at `now` waits for room until `deadline`.
    enum Wake: Equatable {
        /// At its retry time, which comes by its deadline.
        case at(UInt64)
        /// When a lease of its budget is settled (refused on concurrency).
        case onSettlement
        /// It cannot: too large, or no room by its deadline.
        case never
    }

    /// The one rule of who waits: refused on requests or tokens with a retry time by
    /// the deadline, or on concurrency before the deadline.
    static func wake(after denial: Decision, now: UInt64, deadline: UInt64) -> Wake {
        switch denial.reason {
        case .requests?, .tokens?:
            guard let retryAfter = denial.retryAfter else { return .never }
            let time = now.addingSaturating(retryAfter)
            return time <= deadline ? .at(time) : .never
        case .concurrency?:
            return now < deadline ? .onSettlement : .never
        case .tooLarge?, nil:
            return .never
        }
    }

    /// Whether a call refused with `denial` may wait for room until `deadline`.
    func mayWait(_ denial: LimitedDecision, until deadline: UInt64) -> Bool {
        Self.wake(after: denial.decision, now: clock.now(), deadline: deadline) != .never
    }

    // MARK: - Joining

    /// Queues a call refused with `denial` that may wait (`mayWait`); it is woken at its
    /// retry time when it heads its key's queue. Answers with `denial` at once when the
    /// room is full.
    func wait(
        key: LimitKey, deadline: UInt64, denial: LimitedDecision, attempt: @escaping Attempt,
        cancellation: WaitCancellation?, answer: @escaping Answer
    ) {
        let waiter = Waiter(key: key, deadline: deadline, attempt: attempt, answer: answer)
        waiter.lastDenial = denial.decision
        let wake = Self.wake(after: denial.decision, now: clock.now(), deadline: deadline)
        let joined: Bool = state.withLock { queues in
            guard reserve() else { return false }
            if queues[key] == nil, case .at(let time) = wake { waiter.wakeAt = time }
            queues[key, default: []].append(waiter)
            return true
        }
        guard joined else {
            answer(.success(denial), .overflow)
            return
        }
        arm(waiter, cancellation: cancellation)
    }

    /// Queues a call behind the calls already waiting on its key, without deciding it
    /// first (they come first). Refused at once (`refusal` of the head's last denial,
    /// restated for this call) when the head will not even be woken before this call's
    /// deadline, or when the room is full.
    ///
    /// - Returns: false, having done nothing, when no call waits on the key any more
    ///   (the caller then decides the call as the first of its key).
    func join(
        key: LimitKey, deadline: UInt64, attempt: @escaping Attempt, cancellation: WaitCancellation?,
        refusal: @escaping @Sendable (Decision, UInt64) -> LimitedDecision, answer: @escaping Answer
    ) -> Bool {
        let waiter = Waiter(key: key, deadline: deadline, attempt: attempt, answer: answer)
        let now = clock.now()
        enum Joined { case queued, hopeless(LimitedDecision), noQueue, full(LimitedDecision?) }
        let joined: Joined = state.withLock { queues in
            guard let head = queues[key]?.first else { return .noQueue }
            if let wakeAt = head.wakeAt, wakeAt > deadline, let denial = head.lastDenial {
                return .hopeless(refusal(denial, wakeAt > now ? wakeAt - now : 0))
            }
            guard reserve() else { return .full(head.lastDenial.map { refusal($0, head.wakeAt.map { $0 > now ? $0 - now : 0 } ?? 0) }) }
            queues[key]!.append(waiter)
            return .queued
        }
        switch joined {
        case .noQueue:
            return false
        case .hopeless(let refused):
            answer(.success(refused), .refused)
        case .full(let refused?):
            answer(.success(refused), .overflow)
        case .full(nil):
            // The head has no refusal to restate (it cannot happen: every head was
            // refused once); decide this call as if it did not wait.
            switch attempt() {
            case .ready(let result): answer(result, .overflow)
            case .later(let wait): wait { answer($0, .overflow) }
            }
        case .queued:
            arm(waiter, cancellation: cancellation)
        }
        return true
    }

    /// Takes one place in the room, under the lock; false when it is full.
    private func reserve() -> Bool {
        guard count < capacity else { return false }
        waiting.add(1, ordering: .relaxed)
        return true
    }

    /// Starts a queued call's timers and its cancellation.
    private func arm(_ waiter: Waiter, cancellation: WaitCancellation?) {
        let expiry = timer.schedule(at: waiter.deadline) { [self] in expire(waiter) }
        // Another thread may have decided and answered the call since it was queued.
        let (wakeAt, answered): (UInt64?, Bool) = state.withLock { _ in
            guard waiter.phase != .done else { return (nil, true) }
            waiter.expiry = expiry
            return (waiter.phase == .queued ? waiter.wakeAt : nil, false)
        }
        if answered { expiry.cancel() }
        if let wakeAt { scheduleWake(waiter, at: wakeAt) }
        cancellation?.onCancel { [self] in cancel(waiter) }
    }

    private func scheduleWake(_ waiter: Waiter, at time: UInt64) {
        let key = waiter.key
        let handle = timer.schedule(at: time) { [self] in drive(key) }
        let stale: WaitTimerHandle? = state.withLock { _ in
            guard waiter.phase == .queued, waiter.wakeAt == time else { return handle }
            let previous = waiter.wake
            waiter.wake = handle
            return previous
        }
        stale?.cancel()
    }

    // MARK: - Deciding

    /// Room may have come on `key` (a lease settled): its head is decided again now.
    func roomMayHaveCome(on key: LimitKey) {
        guard hasQueue(for: key) else { return }
        drive(key)
    }

    /// Decides the head of `key`'s queue, and the next ones while heads leave it.
    private func drive(_ key: LimitKey) {
        while let head = claimHead(key) {
            switch head.attempt() {
            case .ready(let result):
                guard decided(head, result) else { return }
            case .later(let wait):
                wait { [self] result in
                    if decided(head, result) { drive(key) }
                }
                return
            }
        }
    }

    /// The head of `key`'s queue, now being decided; nil when there is none or it is
    /// being decided already.
    private func claimHead(_ key: LimitKey) -> Waiter? {
        let claimed: (Waiter, WaitTimerHandle?)? = state.withLock { queues in
            guard let head = queues[key]?.first, head.phase == .queued else { return nil }
            head.phase = .deciding
            let wake = head.wake
            head.wake = nil
            head.wakeAt = nil
            return (head, wake)
        }
        claimed?.1?.cancel()
        return claimed?.0
    }

    /// A call's deadline: decided once more, and answered either way.
    private func expire(_ waiter: Waiter) {
        let key = waiter.key
        let claimed = state.withLock { queues in
            guard waiter.phase == .queued else { return false }
            waiter.phase = .deciding
            waiter.isFinal = true
            return true
        }
        guard claimed else { return }
        switch waiter.attempt() {
        case .ready(let result):
            if decided(waiter, result) { drive(key) }
        case .later(let wait):
            wait { [self] result in
                if decided(waiter, result) { drive(key) }
            }
        }
    }

    /// Takes a decision of `waiter`: answers it and takes it out of its queue, or
    /// queues it again to be woken at its new retry time.
    ///
    /// - Returns: whether the call left the head of its queue (the next is decided now).
    private func decided(_ waiter: Waiter, _ result: Result<LimitedDecision, any Error>) -> Bool {
        let now = clock.now()
        var outcome: WaitOutcome?
        var wakeAt: UInt64?
        var leftHead = false
        var timers: [WaitTimerHandle] = []
        state.withLock { queues in
            if !waiter.isCancelled, !waiter.isFinal, case .success(let limited) = result, limited.isDenied {
                // Its deadline may have come while this decision was under way.
                let wake = Self.wake(after: limited.decision, now: now, deadline: waiter.deadline)
                if case .at(let time) = wake { wakeAt = time }
                if wake != .never {
                    waiter.phase = .queued
                    waiter.wakeAt = wakeAt
                    waiter.lastDenial = limited.decision
                    return
                }
            }
            waiter.phase = .done
            if let wake = waiter.wake { timers.append(wake) }
            if let expiry = waiter.expiry { timers.append(expiry) }
            if let index = queues[waiter.key]?.firstIndex(where: { $0 === waiter }) {
                leftHead = index == 0
                queues[waiter.key]!.remove(at: index)
                if queues[waiter.key]!.isEmpty { queues[waiter.key] = nil }
            }
            waiting.subtract(1, ordering: .relaxed)
            if waiter.isCancelled {
                outcome = .cancelled
            } else if case .success(let limited) = result, !limited.isDenied {
                outcome = .admitted
            } else {
                outcome = .refused
            }
        }
        for handle in timers { handle.cancel() }
        if let wakeAt {
            scheduleWake(waiter, at: wakeAt)
            return false
        }
        guard let outcome else { return false }
        if outcome == .cancelled, case .success(let limited) = result, limited.isDenied {
            waiter.answer(.failure(WaitCancelled()), .cancelled)
        } else {
            waiter.answer(result, outcome)
        }
        return leftHead
    }

    /// The caller gave up: out of the queue at once (or, while a decision is under
    /// way, as soon as it comes back).
    private func cancel(_ waiter: Waiter) {
        let removed: (timers: [WaitTimerHandle], wasHead: Bool)? = state.withLock { queues in
            switch waiter.phase {
            case .done:
                return nil
            case .deciding:
                waiter.isCancelled = true
                return nil
            case .queued:
                waiter.phase = .done
                var wasHead = false
                if let index = queues[waiter.key]?.firstIndex(where: { $0 === waiter }) {
                    wasHead = index == 0
                    queues[waiter.key]!.remove(at: index)
                    if queues[waiter.key]!.isEmpty { queues[waiter.key] = nil }
                }
                waiting.subtract(1, ordering: .relaxed)
                return ([waiter.wake, waiter.expiry].compactMap { $0 }, wasHead)
            }
        }
        guard let removed else { return }
        for handle in removed.timers { handle.cancel() }
        waiter.answer(.failure(WaitCancelled()), .cancelled)
        if removed.wasHead { drive(waiter.key) }
    }
}

/// How a waiting call ended (for metrics: `weir_waits_total{outcome}`).
public enum WaitOutcome: String, Sendable, Hashable, CaseIterable {
    /// Admitted after waiting.
    case admitted
    /// Refused: its bound came first, or it could not be admitted within it.
    case refused
    /// Its caller went away.
    case cancelled
    /// Refused at once: as many calls as allowed were waiting.
    case overflow
}
