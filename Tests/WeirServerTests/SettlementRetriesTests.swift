import Synchronization
import Testing
import WeirConformance
import WeirCore
@testable import WeirServer

/// The gateway's settlements waiting for the store, driven without a store: each
/// attempt's outcome comes from the test.
@Suite("SettlementRetries")
struct SettlementRetriesTests {
    static func entry(_ n: UInt64, expiresAt: UInt64 = .max) -> SettlementRetries.Entry {
        .init(lease: LeaseID(rawValue: n), units: n * 10, expiresAt: expiresAt)
    }

    @Test("while the store is down, one attempt per round; once it answers, all go, oldest first")
    func outageThenBack() async {
        let retries = SettlementRetries()
        for n in 1...5 as ClosedRange<UInt64> { retries.add(Self.entry(n)) }
        var attempts: [UInt64] = []
        let none = await retries.retry(now: 0) { entry in
            attempts.append(entry.lease.rawValue)
            return .unavailable
        }
        #expect(none == 0 && attempts == [1], "one attempt finds the store down")
        #expect(retries.count == 5)
        attempts = []
        let all = await retries.retry(now: 0) { entry in
            attempts.append(entry.lease.rawValue)
            return .answered
        }
        #expect(all == 5 && attempts == [1, 2, 3, 4, 5])
        #expect(retries.count == 0 && retries.dropped == 0)
    }

    @Test("a settlement whose lease has expired is dropped unsent: the store freed the slot itself")
    func expired() async {
        let retries = SettlementRetries()
        retries.add(Self.entry(1, expiresAt: 100))
        retries.add(Self.entry(2, expiresAt: 300))
        var sent: [UInt64] = []
        await retries.retry(now: 100) { entry in
            sent.append(entry.lease.rawValue)
            return .answered
        }
        #expect(sent == [2])
        #expect(retries.count == 0)
    }

    @Test("bounded: beyond the capacity the oldest is dropped and counted")
    func bounded() async {
        let retries = SettlementRetries(capacity: 3)
        for n in 1...5 as ClosedRange<UInt64> { retries.add(Self.entry(n)) }
        #expect(retries.count == 3 && retries.dropped == 2)
        var sent: [UInt64] = []
        await retries.retry(now: 0) { entry in
            sent.append(entry.lease.rawValue)
            return .answered
        }
        #expect(sent == [3, 4, 5])
    }

    /// Random adds, rounds with the store up or down (or going down mid-round), and
    /// expiries, against a model: every settlement added is sent until the store
    /// answers it once, or expires, or is dropped for room; never answered twice, never
    /// lost, and the order is the order of adding.
    @Test("agrees with a model: each settlement answered once, expired, or dropped and counted", arguments: [1, 2, 3, 4] as [UInt64])
    func model(seed: UInt64) async {
        var random = SeededGenerator(seed: seed)
        let capacity = 6
        let retries = SettlementRetries(capacity: capacity)
        var model: [SettlementRetries.Entry] = []
        var answered: [UInt64: Int] = [:]
        var dropped = 0
        var expired = 0
        var now: UInt64 = 0
        var next: UInt64 = 1
        for _ in 0..<2_000 {
            now += UInt64.random(in: 0...3, using: &random)
            switch Int.random(in: 0..<3, using: &random) {
            case 0, 1:
                let entry = Self.entry(next, expiresAt: now + UInt64.random(in: 1...40, using: &random))
                next += 1
                retries.add(entry)
                if model.count >= capacity {
                    model.removeFirst()
                    dropped += 1
                }
                model.append(entry)
            default:
                // The store answers this many attempts, then is down.
                let answers = Int.random(in: 0...8, using: &random)
                var sent: [SettlementRetries.Entry] = []
                let count = await retries.retry(now: now) { entry in
                    sent.append(entry)
                    return sent.count <= answers ? .answered : .unavailable
                }
                // The model: from the front, the expired leave unsent; the rest are sent
                // in order until one finds the store down (it stays, at the front).
                var expected: [SettlementRetries.Entry] = []
                while true {
                    while let first = model.first, first.expiresAt <= now {
                        model.removeFirst()
                        expired += 1
                    }
                    guard let first = model.first else { break }
                    expected.append(first)
                    if expected.count > answers { break }
                    model.removeFirst()
                    answered[first.lease.rawValue, default: 0] += 1
                }
                #expect(sent == expected, "oldest first, the expired skipped")
                #expect(count == min(answers, expected.count))
                #expect(sent.allSatisfy { $0.expiresAt > now }, "nothing expired is sent")
            }
            #expect(retries.count == model.count)
            #expect(retries.dropped == dropped)
        }
        #expect(answered.values.allSatisfy { $0 == 1 }, "never answered twice")
        #expect(answered.count + expired + dropped + retries.count == Int(next - 1), "every settlement accounted for")
        #expect(answered.count > 100 && expired > 10 && dropped > 10, "the run met every case")
    }
}
