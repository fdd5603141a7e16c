import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import WeirCore
import WeirServer

@Suite("Decision API")
struct DecisionAPITests {
    @Test("acquire, settle, settle again, unknown lease", arguments: [TestingSetup.router, .ahc(.http)])
    func fullFlow(setup: TestingSetup) async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(setup) { client in
            let acquired = try await client.post(
                "/v1/acquire", #"{"account": "acme", "api": "text", "model": "MiniMax-M2", "units": 1500}"#)
            #expect(acquired.status == .ok)
            let body = try acquired.json
            #expect(body["allowed"] as? Bool == true)
            let lease = try #require(body["lease"] as? String)
            #expect(lease.count == 16)
            #expect(body["tier"] as? String == "free")
            let requests = try acquired.limit("requests")
            #expect(int(requests, "limit") == 20)
            #expect(int(requests, "remaining") == 19)
            #expect(int(requests, "reset_ms") == 60_000)
            let tokens = try acquired.limit("tokens")
            #expect(int(tokens, "limit") == 1_000_000)
            #expect(int(tokens, "remaining") == 998_500)
            #expect(Set(try #require(requests).keys) == ["dimension", "limit", "remaining", "reset_ms"])
            #expect(acquired.header("x-ratelimit-limit-requests") == "20")
            #expect(acquired.header("x-ratelimit-remaining-requests") == "19")
            #expect(acquired.header("x-ratelimit-reset-requests") == "1m0s")
            #expect(acquired.header("x-ratelimit-limit-tokens") == "1000000")
            #expect(acquired.header("x-ratelimit-remaining-tokens") == "998500")
            #expect(acquired.header("x-ratelimit-reset-tokens") == "1m0s")
            #expect(acquired.header("RateLimit-Policy") == #""requests";q=20;w=60, "tokens";q=1000000;w=60;qu="tokens""#)
            #expect(acquired.header("RateLimit") == #""requests";r=19;t=60, "tokens";r=998500;t=60"#)
            #expect(acquired.header("Retry-After") == nil)

            let settled = try await client.post("/v1/settle", #"{"lease": "\#(lease)", "units": 500}"#)
            #expect(settled.status == .ok)
            #expect(int(try settled.json, "refunded") == 1000)
            #expect(int(try settled.limit("tokens"), "remaining") == 999_500)
            #expect(settled.header("x-ratelimit-remaining-tokens") == "999500")
            #expect(settled.header("RateLimit-Policy") == #""requests";q=20;w=60, "tokens";q=1000000;w=60;qu="tokens""#)

            let again = try await client.post("/v1/settle", #"{"lease": "\#(lease)", "units": 500}"#)
            #expect(again.status == .conflict)
            #expect(try errorField(again).field == "lease")
            #expect(try errorField(again).message?.contains("already settled") == true)

            let unknown = try await client.post("/v1/settle", #"{"lease": "00000000000000ff", "units": 1}"#)
            #expect(unknown.status == .notFound)
            #expect(try errorField(unknown).message?.contains("unknown lease") == true)
        }
    }

    @Test("the free tier's 21st MiniMax-M2 request in a minute is a 429 with exact hints", arguments: [TestingSetup.router, .ahc(.http)])
    func twentyFirstRequest(setup: TestingSetup) async throws {
        let clock = ManualClock(start: 1_000 * Nanoseconds.perSecond)
        let app = try await buildApplication(configuration: testConfiguration(clock: clock))
        try await app.test(setup) { client in
            // 20 requests, one every 500 ms: t = 0, 0.5, ..., 9.5 s.
            for index in 0..<20 {
                let response = try await client.post("/v1/acquire", #"{"account": "free-1", "api": "text", "model": "MiniMax-M2"}"#)
                #expect(response.status == .ok, "request \(index + 1)")
                #expect(response.header("x-ratelimit-remaining-requests") == String(19 - index))
                clock.advance(by: 500 * Nanoseconds.perMillisecond)
            }
            // The 21st at t = 10.25 s: the first leaves the window at t = 60 s.
            clock.advance(by: 250 * Nanoseconds.perMillisecond)
            let denied = try await client.post("/v1/acquire", #"{"account": "free-1", "api": "text", "model": "MiniMax-M2"}"#)
            #expect(denied.status == .tooManyRequests)
            let body = try denied.json
            #expect(body["allowed"] as? Bool == false)
            #expect(body["reason"] as? String == "requests")
            #expect(int(body, "retry_after_ms") == 49_750)
            #expect(body["lease"] == nil)
            #expect(int(try denied.limit("requests"), "remaining") == 0)
            // The last admission (t = 9.5 s) leaves at 69.5 s: 59.25 s from now.
            #expect(int(try denied.limit("requests"), "reset_ms") == 59_250)
            #expect(denied.header("Retry-After") == "50")
            #expect(denied.header("x-ratelimit-limit-requests") == "20")
            #expect(denied.header("x-ratelimit-remaining-requests") == "0")
            #expect(denied.header("x-ratelimit-reset-requests") == "59.25s")
            #expect(denied.header("x-ratelimit-remaining-tokens") == "1000000")
            #expect(denied.header("RateLimit") == #""requests";r=0;t=50, "tokens";r=1000000;t=0"#)
            let message = try #require(body["message"] as? String)
            #expect(message.contains("20 requests per 1m0s"))
            #expect(message.contains("20 used, 1 asked"))
            #expect(message.contains("retry in 49.75s"))

            // Another account's budget is untouched.
            let other = try await client.post("/v1/acquire", #"{"account": "free-2", "api": "text", "model": "MiniMax-M2"}"#)
            #expect(other.status == .ok)

            // One millisecond early is still denied; at the hinted moment it fits.
            clock.advance(by: 49_749 * Nanoseconds.perMillisecond)
            let early = try await client.post("/v1/acquire", #"{"account": "free-1", "api": "text", "model": "MiniMax-M2"}"#)
            #expect(early.status == .tooManyRequests)
            #expect(int(try early.json, "retry_after_ms") == 1)
            clock.advance(by: Nanoseconds.perMillisecond)
            let onTime = try await client.post("/v1/acquire", #"{"account": "free-1", "api": "text", "model": "MiniMax-M2"}"#)
            #expect(onTime.status == .ok)
        }
    }

    @Test("a call larger than the limit is too_large, without a retry hint")
    func tooLarge() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.router) { client in
            let response = try await client.post(
                "/v1/acquire", #"{"account": "a", "api": "image-generation", "model": "image-01", "units": 61}"#)
            #expect(response.status == .tooManyRequests)
            let body = try response.json
            #expect(body["reason"] as? String == "too_large")
            #expect(body["retry_after_ms"] is NSNull)
            #expect(response.header("Retry-After") == nil)
            #expect((body["message"] as? String)?.contains("can never be admitted") == true)
        }
    }

    @Test("concurrency: a slot is held until settle")
    func concurrency() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.router) { client in
            var leases: [String] = []
            for _ in 0..<20 {
                let response = try await client.post("/v1/acquire", #"{"account": "m", "api": "music-generation", "model": "Music-2.0"}"#)
                #expect(response.status == .ok)
                leases.append(try #require(try response.json["lease"] as? String))
            }
            let denied = try await client.post("/v1/acquire", #"{"account": "m", "api": "music-generation", "model": "Music-2.0"}"#)
            #expect(denied.status == .tooManyRequests)
            #expect(try denied.json["reason"] as? String == "concurrency")
            #expect(denied.header("RateLimit-Policy")?.contains(#""concurrency";q=20;qu="concurrent-requests""#) == true)
            let settled = try await client.post("/v1/settle", #"{"lease": "\#(leases[0])", "units": 0}"#)
            #expect(settled.status == .ok)
            let allowed = try await client.post("/v1/acquire", #"{"account": "m", "api": "music-generation", "model": "Music-2.0"}"#)
            #expect(allowed.status == .ok)
        }
    }

    @Test("an expired lease cannot be settled: 409")
    func expiredLease() async throws {
        let clock = ManualClock(start: 1_000 * Nanoseconds.perSecond)
        let app = try await buildApplication(configuration: testConfiguration(clock: clock))
        try await app.test(.router) { client in
            let acquired = try await client.post(
                "/v1/acquire", #"{"account": "a", "api": "text", "model": "MiniMax-M2", "lease_ttl_ms": 1000}"#)
            let lease = try #require(try acquired.json["lease"] as? String)
            clock.advance(by: 1001 * Nanoseconds.perMillisecond)
            let settled = try await client.post("/v1/settle", #"{"lease": "\#(lease)", "units": 0}"#)
            #expect(settled.status == .conflict)
            #expect(try errorField(settled).message?.contains("expired") == true)
        }
    }
}
