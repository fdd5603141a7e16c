import Synchronization
import Testing
import WeirConformance
@testable import WeirRedis

/// `CallBatcher`: every call sent once and answered once with its own answer, batches
/// bounded in size and in flight, arrival order kept, a batch's failure confined to it.
@Suite("CallBatcher", .timeLimit(.minutes(1)))
struct CallBatcherTests {
    /// What a test `send` saw: the batches in the order they were sent, and the most
    /// batches in flight at once.
    final class Recorder: Sendable {
        struct State {
            var batches: [[Int]] = []
            var inFlight = 0
            var mostInFlight = 0
        }

        let state = Mutex(State())

        func begin(_ batch: [Int]) {
            state.withLock {
                $0.batches.append(batch)
                $0.inFlight += 1
                $0.mostInFlight = max($0.mostInFlight, $0.inFlight)
            }
        }

        func end() {
            state.withLock { $0.inFlight -= 1 }
        }
    }

    @Test("a call alone is sent at once, by itself")
    func alone() async throws {
        let batcher = CallBatcher<Int, Int>(maximumInFlight: 2, maximumBatch: 8)
        let recorder = Recorder()
        let answer = try await batcher.submit(41) { calls in
            recorder.begin(calls)
            defer { recorder.end() }
            return calls.map { .success($0 + 1) }
        }
        #expect(answer == 42)
        #expect(recorder.state.withLock { $0.batches } == [[41]])
    }

    @Test("calls that arrive while the batches in flight are full leave together, in order, with the next batch")
    func queued() async throws {
        let batcher = CallBatcher<Int, Int>(maximumInFlight: 1, maximumBatch: 3)
        let recorder = Recorder()
        // The first batch is held until the other five calls are queued behind it.
        let (gate, open) = AsyncStream<Void>.makeStream()
        let send: CallBatcher<Int, Int>.Send = { calls in
            recorder.begin(calls)
            defer { recorder.end() }
            if calls == [0] {
                for await _ in gate { break }
            }
            return calls.map { .success($0 * 10) }
        }
        try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            group.addTask { (0, try await batcher.submit(0, send: send)) }
            while recorder.state.withLock({ $0.batches.isEmpty }) { await Task.yield() }
            for call in 1...5 {
                group.addTask { (call, try await batcher.submit(call, send: send)) }
                // Keep arrival order: each call is queued before the next starts.
                while batcher.queuedCount < call { await Task.yield() }
            }
            open.yield()
            for try await (call, answer) in group {
                #expect(answer == call * 10)
            }
        }
        let state = recorder.state.withLock { $0 }
        #expect(state.batches == [[0], [1, 2, 3], [4, 5]])
        #expect(state.mostInFlight == 1)
    }

    @Test("a failed batch fails its own calls only")
    func failure() async throws {
        struct Refused: Error {}
        let batcher = CallBatcher<Int, Int>(maximumInFlight: 1, maximumBatch: 1)
        let send: CallBatcher<Int, Int>.Send = { calls in
            calls.map { $0.isMultiple(of: 2) ? .failure(Refused()) : .success($0) }
        }
        for call in 0..<6 {
            if call.isMultiple(of: 2) {
                await #expect(throws: Refused.self) { try await batcher.submit(call, send: send) }
            } else {
                #expect(try await batcher.submit(call, send: send) == call)
            }
        }
        let short: CallBatcher<Int, Int>.Send = { _ in [] }
        await #expect(throws: CallBatcher<Int, Int>.BatchError.self) { try await batcher.submit(7, send: short) }
    }

    @Test("under random load: each call answered once with its own answer, batches and flights bounded",
          arguments: [(1, 1), (1, 4), (2, 8), (3, 64), (4, 5)])
    func load(maximumInFlight: Int, maximumBatch: Int) async throws {
        let batcher = CallBatcher<Int, Int>(maximumInFlight: maximumInFlight, maximumBatch: maximumBatch)
        let recorder = Recorder()
        let send: CallBatcher<Int, Int>.Send = { calls in
            recorder.begin(calls)
            defer { recorder.end() }
            // Suspend a varying number of times, so batches overlap and queues form.
            for _ in 0..<(calls.first ?? 0) % 5 { await Task.yield() }
            return calls.map { .success($0 &* 7 &+ 3) }
        }
        let callers = 40
        let callsPerCaller = 50
        try await withThrowingTaskGroup(of: Void.self) { group in
            for caller in 0..<callers {
                group.addTask {
                    var random = SeededGenerator(seed: UInt64(caller + 1))
                    for step in 0..<callsPerCaller {
                        let call = caller * callsPerCaller + step
                        let answer = try await batcher.submit(call, send: send)
                        #expect(answer == call &* 7 &+ 3)
                        for _ in 0..<Int.random(in: 0..<3, using: &random) { await Task.yield() }
                    }
                }
            }
            try await group.waitForAll()
        }
        let state = recorder.state.withLock { $0 }
        let sent = state.batches.flatMap { $0 }
        #expect(sent.count == callers * callsPerCaller)
        #expect(Set(sent).count == sent.count, "a call was sent twice")
        #expect(state.batches.allSatisfy { !$0.isEmpty && $0.count <= maximumBatch })
        #expect(state.mostInFlight <= maximumInFlight)
        #expect(state.inFlight == 0)
        // Each caller's calls were sent in its own order.
        for caller in 0..<callers {
            let own = sent.filter { $0 / callsPerCaller == caller }
            #expect(own == own.sorted())
        }
        if maximumBatch > 1 && maximumInFlight < callers {
            #expect(state.batches.contains { $0.count > 1 }, "no call was ever batched")
        }
    }
}
