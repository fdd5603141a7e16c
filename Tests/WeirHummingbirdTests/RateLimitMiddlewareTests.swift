import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import WeirCore
import WeirHummingbird
import WeirAnswers
import WeirPolicy

@Suite("RateLimitMiddleware")
struct RateLimitMiddlewareTests {
    static let account = HTTPField.Name("x-account")!

    /// A router with one limited route: the account from `x-account`, the API and model
    /// from the query, 10 units per call.
    static func application(clock: ManualClock) -> some ApplicationProtocol {
        let limiter = Limiter(catalogue: .builtIn, store: InMemoryStore(clock: clock))
        let router = Router()
        router.add(middleware: RateLimitMiddleware(limiter: limiter) { request, _ in
            guard let account = request.headers[account] else { return nil }
            return RateLimitSubject(
                account: account,
                api: request.uri.queryParameters["api"].map(String.init) ?? "text",
                model: request.uri.queryParameters["model"].map(String.init) ?? "MiniMax-M2",
                units: 10)
        })
        router.get("/call") { _, _ in "done" }
        return Application(router: router)
    }

    @Test("allowed calls get the headers; the 21st in a minute is answered 429 by the middleware", arguments: [TestingSetup.router, .live])
    func limits(setup: TestingSetup) async throws {
        let clock = ManualClock(start: 5 * Nanoseconds.perSecond)
        try await Self.application(clock: clock).test(setup) { client in
            for index in 0..<20 {
                let response = try await client.execute(uri: "/call", method: .get, headers: [Self.account: "a"])
                #expect(response.status == .ok)
                #expect(String(buffer: response.body) == "done")
                #expect(response.headers[HTTPField.Name("x-ratelimit-remaining-requests")!] == String(19 - index))
                #expect(response.headers[HTTPField.Name("x-ratelimit-limit-tokens")!] == "1000000")
            }
            clock.advance(by: 1500 * Nanoseconds.perMillisecond)
            let denied = try await client.execute(uri: "/call", method: .get, headers: [Self.account: "a"])
            #expect(denied.status == .tooManyRequests)
            #expect(denied.headers[.retryAfter] == "59")
            #expect(denied.headers[HTTPField.Name("x-ratelimit-reset-requests")!] == "58.5s")
            #expect(denied.headers[HTTPField.Name("RateLimit")!]?.hasPrefix(#""requests";r=0;t=59"#) == true)
            let body = try JSONSerialization.jsonObject(with: Data(String(buffer: denied.body).utf8)) as? [String: Any]
            let error = body?["error"] as? [String: Any]
            #expect(error?["code"] as? String == "rate_limit_exceeded")
            #expect((error?["message"] as? String)?.contains("20 requests per 1m0s") == true)

            let unlimited = try await client.execute(uri: "/call", method: .get)
            #expect(unlimited.status == .ok)
            #expect(unlimited.headers[HTTPField.Name("x-ratelimit-limit-requests")!] == nil)
        }
    }

    @Test("an unknown model is 400; concurrency slots are freed when the handler returns")
    func modelsAndSlots() async throws {
        let clock = ManualClock(start: 5 * Nanoseconds.perSecond)
        try await Self.application(clock: clock).test(.router) { client in
            let unknown = try await client.execute(uri: "/call?model=GPT-9", method: .get, headers: [Self.account: "a"])
            #expect(unknown.status == .badRequest)
            // 20 slots; 30 calls one after another all pass because each frees its slot.
            for _ in 0..<30 {
                let response = try await client.execute(
                    uri: "/call?api=music-generation&model=Music-2.0", method: .get, headers: [Self.account: "m"])
                #expect(response.status == .ok)
            }
        }
    }
}

@Suite("Rate limit headers")
struct RateLimitHeadersTests {
    @Test("Go-style durations", arguments: [
        (0, "0s"), (1, "1ms"), (999, "999ms"), (1000, "1s"), (1500, "1.5s"), (59_500, "59.5s"), (59_250, "59.25s"),
        (60_000, "1m0s"), (360_000, "6m0s"), (61_001, "1m1.001s"), (3_600_000, "1h0m0s"), (3_661_500, "1h1m1.5s"),
    ] as [(UInt64, String)])
    func goDuration(milliseconds: UInt64, expected: String) {
        #expect(GoDuration.string(milliseconds: milliseconds) == expected)
    }

    @Test("durations printed into bytes match the string form")
    func appendMatchesString() {
        var generator = SystemRandomNumberGenerator()
        let samples: [UInt64] = Array(0...2_100) + (0..<2_000).map { _ in UInt64.random(in: 0...10_000_000_000_000, using: &generator) }
        for nanoseconds in samples.map({ $0 * 999_983 }) + [0, 1, 59_999_000_001, 60_000_000_000, UInt64.max / 2] {
            var bytes: [UInt8] = []
            GoDuration.append(nanoseconds: nanoseconds, to: &bytes)
            #expect(String(decoding: bytes, as: UTF8.self) == GoDuration.string(nanoseconds: nanoseconds))
        }
    }

    @Test("durations round up to whole milliseconds")
    func roundsUp() {
        #expect(GoDuration.string(nanoseconds: 1) == "1ms")
        #expect(GoDuration.string(nanoseconds: 1_000_000_001) == "1.001s")
    }

    @Test("both families, and Retry-After in whole seconds rounded up")
    func fields() {
        let statuses = LimitStatuses(
            requests: DimensionStatus(limit: 20, remaining: 0, reset: 30 * Nanoseconds.perSecond),
            tokens: DimensionStatus(limit: 1000, remaining: 400, reset: 1500 * Nanoseconds.perMillisecond))
        let windows = LimitSet(requests: .perMinute(20), tokens: .perMinute(1000))
        var fields = HTTPFields()
        RateLimitHeaders.add(
            to: &fields, statuses: statuses, windows: windows, denied: .requests, retryAfter: 2_000_000_001)
        #expect(fields[HTTPField.Name("x-ratelimit-limit-requests")!] == "20")
        #expect(fields[HTTPField.Name("x-ratelimit-reset-requests")!] == "30s")
        #expect(fields[HTTPField.Name("x-ratelimit-reset-tokens")!] == "1.5s")
        #expect(fields[HTTPField.Name("RateLimit-Policy")!] == #""requests";q=20;w=60, "tokens";q=1000;w=60;qu="tokens""#)
        #expect(fields[HTTPField.Name("RateLimit")!] == #""requests";r=0;t=3, "tokens";r=400;t=2"#)
        #expect(fields[.retryAfter] == "3")
    }

    @Test("the printed RateLimit and the cached RateLimit-Policy are what swift-http-structured-headers serializes")
    func matchesLibrary() {
        let figures: [UInt64] = [0, 1, 7, 19, 20, 59, 60, 999, 1_000_000, 20_000_000, 999_999_999_999_999, UInt64.max]
        let resets: [UInt64] = [0, 1, Nanoseconds.perSecond, 59_250 * Nanoseconds.perMillisecond, 3_600 * Nanoseconds.perSecond]
        var checked = 0
        for limit in figures.dropFirst() {
            for remaining in figures where remaining <= limit {
                for reset in resets {
                    for dimensions in 1..<8 {
                        let status = DimensionStatus(limit: limit, remaining: remaining, reset: reset)
                        let statuses = LimitStatuses(
                            requests: dimensions & 1 != 0 ? status : nil,
                            tokens: dimensions & 2 != 0 ? status : nil,
                            concurrency: dimensions & 4 != 0 ? status : nil)
                        let windows = LimitSet(
                            requests: Limit(limit: 1, window: reset + 1), tokens: Limit(limit: 1, window: 60 * Nanoseconds.perSecond))
                        for (denied, retry) in [(nil, nil), (DenialReason.requests, reset / 2), (.tokens, reset)] as [(DenialReason?, UInt64?)] {
                            let reference = RateLimitHeaders.structuredFields(
                                statuses: statuses, windows: windows, denied: denied, retryAfter: retry)
                            let pairs = Dictionary(
                                uniqueKeysWithValues: RateLimitHeaders.pairs(
                                    statuses: statuses, windows: windows, denied: denied, retryAfter: retry))
                            #expect(pairs["RateLimit"] == reference.rateLimit)
                            #expect(pairs["RateLimit-Policy"] == reference.policy)
                            // The HTTP/1.1 lines printed directly are the pairs, in order.
                            var lines: [UInt8] = []
                            RateLimitHeaders.appendHTTP1(
                                to: &lines, statuses: statuses, windows: windows, denied: denied, retryAfter: retry)
                            let expected = RateLimitHeaders.pairs(
                                statuses: statuses, windows: windows, denied: denied, retryAfter: retry
                            ).map { "\($0.0): \($0.1)\r\n" }.joined()
                            #expect(String(decoding: lines, as: UTF8.self) == expected)
                            checked += 1
                        }
                    }
                }
            }
        }
        #expect(checked > 1000)
    }

    @Test("a subject that may wait is answered when room comes, not 429", arguments: [TestingSetup.router, .live])
    func waiting(setup: TestingSetup) async throws {
        let clock = ManualClock(start: 5 * Nanoseconds.perSecond)
        let timer = ManualWaitTimer(clock: clock)
        let limiter = Limiter(
            catalogue: .builtIn, store: InMemoryStore(clock: clock), waiting: WaitSettings(timer: timer, clock: clock))
        let router = Router()
        router.add(middleware: RateLimitMiddleware(limiter: limiter) { request, _ in
            let wait = request.headers[HTTPField.Name("x-wait")!].flatMap(UInt64.init).map { $0 * Nanoseconds.perSecond }
            return RateLimitSubject(account: "w", api: "text", model: "MiniMax-M2", units: 10, maxWait: wait)
        })
        router.get("/call") { _, _ in "done" }
        try await Application(router: router).test(setup) { client in
            for _ in 0..<20 { #expect(try await client.execute(uri: "/call", method: .get).status == .ok) }
            #expect(try await client.execute(uri: "/call", method: .get).status == .tooManyRequests)
            let waiting = Task { try await client.execute(uri: "/call", method: .get, headers: [HTTPField.Name("x-wait")!: "90"]) }
            await timer.waitForPending(2)
            timer.advance(to: clock.now() + 60 * Nanoseconds.perSecond)
            let answer = try await waiting.value
            #expect(answer.status == .ok)
            #expect(String(buffer: answer.body) == "done")
            #expect(limiter.waitingCalls == 0)
        }
    }
}
