import Testing
import WeirCore
import WeirServer

@Suite("Refusal history")
struct RefusalHistoryTests {
    static let minute = RefusalHistory.minuteLength

    @Test("counts land in whole minutes of the clock; the window slides one minute at a time")
    func minuteBuckets() {
        let clock = ManualClock(start: 0)
        let history = RefusalHistory(clock: clock)
        history.record(account: "a", reason: .requests)
        history.record(account: "a", reason: .requests)
        clock.set(to: Self.minute - 1)  // still minute 0
        history.record(account: "a", reason: .requests)
        clock.set(to: Self.minute)  // minute 1 starts exactly here
        history.record(account: "a", reason: .tokens)

        let series = try! #require(history.series(account: "a"))
        var requests = [UInt32](repeating: 0, count: 30)
        requests[28] = 3
        var tokens = [UInt32](repeating: 0, count: 30)
        tokens[29] = 1
        #expect(series.counts == [.requests: requests, .tokens: tokens])
        #expect(series.total == 4)
        #expect(history.series(account: "b") == nil)

        // Minute 29: minute 0 is the oldest of the window.
        clock.set(to: 29 * Self.minute + Self.minute / 2)
        #expect(history.series(account: "a")?.counts[.requests]?.first == 3)
        #expect(history.series(account: "a")?.counts[.tokens]?[1] == 1)
        // Minute 30: minute 0 has left; minute 1 is the oldest.
        clock.set(to: 30 * Self.minute)
        #expect(history.series(account: "a")?.counts[.requests] == nil)
        #expect(history.series(account: "a")?.counts[.tokens]?.first == 1)
        // Minute 31: nothing left.
        clock.set(to: 31 * Self.minute)
        #expect(history.series(account: "a") == nil)
    }

    @Test("a slot reused 30 minutes later starts from zero")
    func slotReuse() {
        let history = RefusalHistory(clock: ManualClock(start: 0))
        for _ in 0..<5 { history.record(account: "a", reason: .concurrency, at: 7 * Self.minute) }
        history.record(account: "a", reason: .concurrency, at: 37 * Self.minute)  // same slot as minute 7
        let series = history.series(account: "a", at: 37 * Self.minute)
        var expected = [UInt32](repeating: 0, count: 30)
        expected[29] = 1
        #expect(series?.counts == [.concurrency: expected])
    }

    @Test("every reason has its own series; all() lists refused accounts and forgets stale ones")
    func reasonsAndAll() {
        let clock = ManualClock(start: 100 * Self.minute)
        let history = RefusalHistory(clock: clock)
        for reason in DenialReason.allCases { history.record(account: "x", reason: reason) }
        history.record(account: "y", reason: .tooLarge)
        let all = history.all()
        #expect(Set(all.keys) == ["x", "y"])
        #expect(Set(all["x"]!.counts.keys) == Set(DenialReason.allCases))
        #expect(all["y"]!.counts[.tooLarge]!.last == 1)
        #expect(history.trackedAccounts == 2)
        clock.advance(by: 30 * Self.minute)
        #expect(history.all().isEmpty)
        #expect(history.trackedAccounts == 0)
    }

    @Test("memory is bounded: at most `capacity` accounts, the least recently refused leave first")
    func bounded() {
        let history = RefusalHistory(clock: ManualClock(start: 0), capacity: 64)
        #expect(history.capacity == 64)
        for index in 0..<10_000 {
            history.record(account: "account-\(index)", reason: .requests, at: UInt64(index / 1000) * Self.minute)
        }
        #expect(history.trackedAccounts <= 64)
        #expect(history.trackedAccounts >= 16)
        // The last account recorded, at the latest minute, is always kept.
        #expect(history.series(account: "account-9999", at: 9 * Self.minute)?.total == 1)
        // An account refused again stays while newer ones arrive in its stripe.
        let keep = "keep-me"
        history.record(account: keep, reason: .tokens, at: 20 * Self.minute)
        for index in 0..<1000 {
            history.record(account: "later-\(index)", reason: .requests, at: 19 * Self.minute)
        }
        #expect(history.series(account: keep, at: 20 * Self.minute)?.total == 1)
        #expect(history.trackedAccounts <= 64)
    }

    @Test("a clock moved backwards never double counts nor crashes")
    func backwards() {
        let history = RefusalHistory(clock: ManualClock(start: 0))
        history.record(account: "a", reason: .requests, at: 35 * Self.minute)
        history.record(account: "a", reason: .requests, at: 5 * Self.minute)  // slot 5 holds minute 35: dropped
        history.record(account: "a", reason: .requests, at: 20 * Self.minute)  // another slot: counted in minute 20
        var expected = [UInt32](repeating: 0, count: 30)
        expected[29] = 1  // minute 35
        expected[14] = 1  // minute 20
        #expect(history.series(account: "a", at: 35 * Self.minute)?.counts == [.requests: expected])
        #expect(history.series(account: "a", at: 20 * Self.minute)?.total == 1)
        #expect(history.series(account: "a", at: 0)?.total == nil)
    }
}
