import Synchronization

/// Groups calls that arrive while earlier groups are in flight, so that many concurrent
/// callers share one round trip (and one script run) instead of paying one each.
///
/// A call is sent at once when fewer than `maximumInFlight` batches are in flight, alone
/// or with whatever queued before it; otherwise it waits in the queue and leaves with the
/// next batch, as soon as one of the batches in flight has its answers. So an idle
/// client adds no delay (no timer, no waiting for company), and a busy one sends batches
/// as large as the load makes them, up to `maximumBatch` calls, in arrival order.
///
/// **Guarantees.** Every submitted call is sent exactly once, in one batch, and its
/// caller resumes exactly once: with its own answer, or with the error of its batch.
/// Calls keep their arrival order within a batch and across batches sent from the queue.
/// At most `maximumInFlight` batches are in flight at any time. A queued call waits for
/// at most one batch in flight to end (answered or failed by its own timeout) before it
/// leaves, so it waits at most twice what one batch may take.
///
/// **Cancellation** is not observed: a call, once submitted, is sent and answered (its
/// effect on the store happens whether or not its caller still waits for it).
///
/// Concurrency: thread-safe. A batch is sent by the `send` of the call that started its
/// burst (callers pass the same one), on a task the batcher starts per burst of batches,
/// never while a lock is held; it must answer every call of the batch, in order.
final class CallBatcher<Call: Sendable, Answer: Sendable>: Sendable {
    /// Sends a batch and returns one answer per call, in the calls' order.
    typealias Send = @Sendable ([Call]) async -> [Result<Answer, any Error>]

    private struct Waiting {
        var call: Call
        var continuation: CheckedContinuation<Answer, any Error>
    }

    private struct State {
        var queue: [Waiting] = []
        var head = 0
        var inFlight = 0

        /// Up to `limit` calls from the front of the queue.
        mutating func take(_ limit: Int) -> [Waiting] {
            let end = min(queue.count, head + limit)
            let batch = Array(queue[head..<end])
            head = end
            if head == queue.count {
                queue.removeAll(keepingCapacity: true)
                head = 0
            }
            return batch
        }
    }

    let maximumInFlight: Int
    let maximumBatch: Int
    private let state = Mutex(State())

    /// - Parameters:
    ///   - maximumInFlight: batches sent and not yet answered, at most (at least 1).
    ///   - maximumBatch: calls in one batch, at most (at least 1; 1 turns batching off).
    init(maximumInFlight: Int, maximumBatch: Int) {
        self.maximumInFlight = max(1, maximumInFlight)
        self.maximumBatch = max(1, maximumBatch)
    }

    /// Calls waiting for a batch to leave (not those in flight).
    var queuedCount: Int {
        state.withLock { $0.queue.count - $0.head }
    }

    /// Sends `call` in the next batch that can go, and returns its answer. `send` sends a
    /// batch (see `Send`); every caller of one batcher passes the same.
    func submit(_ call: Call, send: @escaping Send) async throws -> Answer {
        try await withCheckedThrowingContinuation { continuation in
            let batch = state.withLock { state -> [Waiting]? in
                state.queue.append(Waiting(call: call, continuation: continuation))
                guard state.inFlight < maximumInFlight else { return nil }
                state.inFlight += 1
                return state.take(maximumBatch)
            }
            if let batch {
                Task { await self.run(batch, send: send) }
            }
        }
    }

    /// Sends `batch`, then the batches that queued meanwhile, until the queue is empty.
    private func run(_ first: [Waiting], send: Send) async {
        var batch = first
        while true {
            let answers = await send(batch.map(\.call))
            for (index, waiting) in batch.enumerated() {
                if index < answers.count {
                    waiting.continuation.resume(with: answers[index])
                } else {
                    waiting.continuation.resume(throwing: BatchError.missingAnswer(expected: batch.count, got: answers.count))
                }
            }
            let next = state.withLock { state -> [Waiting]? in
                guard state.head < state.queue.count else {
                    state.inFlight -= 1
                    return nil
                }
                return state.take(maximumBatch)
            }
            guard let next else { return }
            batch = next
        }
    }

    /// A `send` that broke its contract (fewer answers than calls).
    enum BatchError: Error, CustomStringConvertible {
        case missingAnswer(expected: Int, got: Int)

        var description: String {
            switch self {
            case .missingAnswer(let expected, let got): "batch answered \(got) of \(expected) calls"
            }
        }
    }
}
