import Foundation
import GRPCCore
import HummingbirdTesting
import Testing
import WeirCore
import WeirEnvoy

/// `ShouldRateLimit` over a real HTTP/2 connection to `weir serve`'s gRPC port, with a
/// grpc-swift-2 client: the descriptor mapping, the answer's fields and headers,
/// unknown descriptors and hits_addend.
@Suite("Envoy rate limit service over gRPC", .timeLimit(.minutes(2)))
struct RateLimitServiceTests {
    static let freeText: [(String, String)] = [("account", "free-1"), ("api", "text"), ("model", "MiniMax-M2")]

    @Test("a free account's 21st MiniMax-M2 call in a minute is OVER_LIMIT, with Weir's statuses, headers and body")
    func freeAccountLimit() async throws {
        let harness = WeirHarness()
        try await harness.run { client, port in
            try await withRateLimitClient(port: port) { rls in
                for call in 1...20 {
                    let answer = try await rls.shouldRateLimit(rlsRequest([Self.freeText]))
                    #expect(answer.overallCode == .ok, "call \(call)")
                    let status = try #require(answer.statuses.first)
                    #expect(answer.statuses.count == 1)
                    #expect(status.code == .ok)
                    #expect(status.currentLimit.requestsPerUnit == 20)
                    #expect(status.currentLimit.unit == .minute)
                    #expect(!status.currentLimit.hasUnitMultiplier)
                    #expect(status.currentLimit.name.contains("text/MiniMax-M2 requests"))
                    #expect(status.limitRemaining == UInt32(20 - call))
                    #expect(status.durationUntilReset.seconds == 60)
                    #expect(answer.header("x-ratelimit-remaining-requests") == String(20 - call))
                    #expect(answer.header("Retry-After") == nil)
                    #expect(answer.rawBody.isEmpty)
                    #expect(answer.header("content-type") == nil)
                }
                harness.clock.advance(by: 15 * Nanoseconds.perSecond)
                let denied = try await rls.shouldRateLimit(rlsRequest([Self.freeText]))
                #expect(denied.overallCode == .overLimit)
                let status = try #require(denied.statuses.first)
                #expect(status.code == .overLimit)
                #expect(status.currentLimit.requestsPerUnit == 20)
                #expect(status.limitRemaining == 0)
                #expect(status.durationUntilReset.seconds == 45)
                #expect(denied.header("x-ratelimit-limit-requests") == "20")
                #expect(denied.header("x-ratelimit-remaining-requests") == "0")
                #expect(denied.header("x-ratelimit-reset-requests") == "45s")
                #expect(denied.header("x-ratelimit-limit-tokens") == "1000000")
                #expect(denied.header("RateLimit-Policy") == #""requests";q=20;w=60, "tokens";q=1000000;w=60;qu="tokens""#)
                #expect(denied.header("RateLimit") == #""requests";r=0;t=45, "tokens";r=1000000;t=0"#)
                #expect(denied.header("Retry-After") == "45")
                #expect(denied.header("content-type") == "application/json")
                let body = try JSONSerialization.jsonObject(with: denied.rawBody) as? [String: Any]
                let base = body?["base_resp"] as? [String: Any]
                #expect((base?["status_code"] as? NSNumber)?.intValue == 1002)
                let message = try #require(base?["status_msg"] as? String)
                #expect(message.contains("20 requests per 1m0s, 20 used, 1 asked; retry in 45s"))
                #expect((body?["error"] as? [String: Any])?["code"] as? String == "rate_limit_exceeded")
            }
            // Envoy's decisions are Weir's decisions: counted where /v1/acquire's are.
            let metrics = try await client.metrics()
            #expect(metrics.contains(#"weir_decisions_total{api="text",model="MiniMax-M2",outcome="allowed",reason="none"} 20"#))
            #expect(metrics.contains(#"weir_decisions_total{api="text",model="MiniMax-M2",outcome="denied",reason="requests"} 1"#))
            #expect(metrics.contains(#"weir_envoy_requests_total{code="over_limit"} 1"#))
        }
    }

    @Test("max_wait_ms: a descriptor waits for room and is OK when the window moves; a bad value is an unknown descriptor")
    func waiting() async throws {
        let harness = WeirHarness()
        try await harness.run { client, port in
            try await withRateLimitClient(port: port) { rls in
                for _ in 1...20 { #expect(try await rls.shouldRateLimit(rlsRequest([Self.freeText])).overallCode == .ok) }
                let waits = Self.freeText + [("max_wait_ms", "60000")]
                let waiting = Task { try await rls.shouldRateLimit(rlsRequest([waits])) }
                await harness.timer.waitForPending(2)
                harness.timer.advance(to: harness.clock.now() + 60 * Nanoseconds.perSecond)
                let answer = try await waiting.value
                #expect(answer.overallCode == .ok)
                #expect(answer.statuses.first?.limitRemaining == 19)
                // Too short a wait for the next room (60 s away): OVER_LIMIT at once.
                for _ in 1...19 { _ = try await rls.shouldRateLimit(rlsRequest([Self.freeText])) }
                let short = try await rls.shouldRateLimit(rlsRequest([Self.freeText + [("max_wait_ms", "1000")]]))
                #expect(short.overallCode == .overLimit)
                let bad = try await rls.shouldRateLimit(rlsRequest([Self.freeText + [("max_wait_ms", "soon")]]))
                #expect(bad.overallCode == .ok, "an unknown descriptor, allowed by default")
            }
            let metrics = try await client.metrics()
            #expect(metrics.contains(#"weir_waits_total{outcome="admitted"} 1"#))
            #expect(metrics.contains(#"weir_envoy_unknown_descriptors_total{reason="bad_max_wait",answer="allow"} 1"#))
        }
    }

    @Test("api_key resolves through the registry; a recharged account is paid (500 per minute)")
    func apiKeys() async throws {
        let harness = WeirHarness()
        try await harness.run { client, port in
            let free = try await client.createAccount("acme")
            let paid = try await client.createAccount("bigco", recharge: 10)
            try await withRateLimitClient(port: port) { rls in
                let stable: [(String, String)] = [("api", "text"), ("model", "MiniMax-M2-Stable")]
                let freeAnswer = try await rls.shouldRateLimit(rlsRequest([[("api_key", "Bearer \(free)")] + stable]))
                #expect(freeAnswer.statuses.first?.currentLimit.requestsPerUnit == 20)
                let paidAnswer = try await rls.shouldRateLimit(rlsRequest([[("api_key", paid)] + stable]))
                #expect(paidAnswer.statuses.first?.currentLimit.requestsPerUnit == 500)
                #expect(paidAnswer.header("x-ratelimit-limit-requests") == "500")
                #expect(paidAnswer.header("x-ratelimit-limit-tokens") == "20000000")
            }
            // The calls went to the accounts' budgets.
            #expect(try await client.used(account: "acme", scope: "text/MiniMax-M2-Stable", dimension: "requests") == 1)
            #expect(try await client.used(account: "bigco", scope: "text/MiniMax-M2-Stable", dimension: "requests") == 1)
        }
    }

    @Test("unknown descriptors are allowed by default and counted, never an error")
    func unknownAllowed() async throws {
        let harness = WeirHarness()
        try await harness.run { client, port in
            try await withRateLimitClient(port: port) { rls in
                let unknowns: [[(String, String)]] = [
                    [("remote_address", "10.0.0.1")],
                    [("api_key", "sk-nobody-has-this"), ("api", "text"), ("model", "MiniMax-M2")],
                    [("account", "a"), ("api", "no-such-api")],
                    [("account", "a"), ("api", "text"), ("model", "no-such-model")],
                    [("account", "a"), ("api", "text"), ("charge", "refund")],
                ]
                for descriptor in unknowns {
                    let answer = try await rls.shouldRateLimit(rlsRequest([descriptor]))
                    #expect(answer.overallCode == .ok, "\(descriptor)")
                    #expect(answer.statuses.map(\.code) == [.ok])
                    #expect(!answer.statuses[0].hasCurrentLimit)
                    #expect(answer.responseHeadersToAdd.isEmpty)
                }
                let otherDomain = try await rls.shouldRateLimit(rlsRequest(domain: "edge", [Self.freeText]))
                #expect(otherDomain.overallCode == .ok)
                #expect(!otherDomain.statuses[0].hasCurrentLimit)

                // A known descriptor next to an unknown one: each gets its status.
                let mixed = try await rls.shouldRateLimit(rlsRequest([[("remote_address", "10.0.0.1")], Self.freeText]))
                #expect(mixed.statuses.count == 2)
                #expect(!mixed.statuses[0].hasCurrentLimit)
                #expect(mixed.statuses[1].currentLimit.requestsPerUnit == 20)
                #expect(mixed.header("x-ratelimit-remaining-requests") == "19")
            }
            let metrics = try await client.metrics()
            for reason in ["no_identity", "unknown_api_key", "unknown_api", "unknown_model", "bad_charge", "domain"] {
                #expect(metrics.contains(#"weir_envoy_unknown_descriptors_total{reason="\#(reason)",answer="allow"} "#), "\(reason)")
            }
            #expect(metrics.contains(#"weir_envoy_unknown_descriptors_total{reason="no_identity",answer="allow"} 2"#))
            // The other domain's call did not touch the budget.
            #expect(try await client.used(account: "free-1", scope: "text/MiniMax-M2", dimension: "requests") == 1)
        }
    }

    @Test("with --envoy-unknown deny, unknown descriptors are OVER_LIMIT with a reason")
    func unknownDenied() async throws {
        let harness = WeirHarness(unknown: .deny)
        try await harness.run { _, port in
            try await withRateLimitClient(port: port) { rls in
                let answer = try await rls.shouldRateLimit(rlsRequest([[("api_key", "sk-unknown"), ("api", "text")]]))
                #expect(answer.overallCode == .overLimit)
                #expect(answer.statuses.map(\.code) == [.overLimit])
                #expect(answer.bodyText.contains("request refused (unknown api key)"))
                #expect(answer.header("content-type") == "application/json")
            }
        }
    }

    @Test("hits_addend is the call's token estimate; the descriptor's wins over the request's; too large is refused")
    func hitsAddend() async throws {
        let harness = WeirHarness()
        try await harness.run { client, port in
            try await withRateLimitClient(port: port) { rls in
                let first = try await rls.shouldRateLimit(rlsRequest(hits: 300_000, [Self.freeText]))
                #expect(first.overallCode == .ok)
                #expect(first.header("x-ratelimit-remaining-tokens") == "700000")
                let second = try await rls.shouldRateLimit(rlsRequest(hits: 9, [Self.freeText], descriptorHits: [600_000]))
                #expect(second.header("x-ratelimit-remaining-tokens") == "100000")
                // 200,000 more do not fit: denied on tokens, with the tokens limit as current_limit.
                let denied = try await rls.shouldRateLimit(rlsRequest(hits: 200_000, [Self.freeText]))
                #expect(denied.overallCode == .overLimit)
                #expect(denied.statuses[0].currentLimit.requestsPerUnit == 1_000_000)
                #expect(denied.statuses[0].currentLimit.name.contains("tokens"))
                #expect(denied.statuses[0].limitRemaining == 100_000)
                #expect(denied.bodyText.contains("1000000 tokens per 1m0s, 900000 used, 200000 asked"))
                // More than the whole limit can never pass.
                let tooLarge = try await rls.shouldRateLimit(rlsRequest([Self.freeText], descriptorHits: [2_000_000]))
                #expect(tooLarge.overallCode == .overLimit)
                #expect(tooLarge.header("Retry-After") == nil)
                #expect(tooLarge.bodyText.contains("request too large"))
            }
            #expect(try await client.used(account: "free-1", scope: "text/MiniMax-M2", dimension: "tokens") == 900_000)
            #expect(try await client.used(account: "free-1", scope: "text/MiniMax-M2", dimension: "requests") == 2)
        }
    }

    @Test("charge=usage adds the units used after the call, counts no request, and later calls see it")
    func usageReports() async throws {
        let harness = WeirHarness()
        try await harness.run { client, port in
            try await withRateLimitClient(port: port) { rls in
                let usage = Self.freeText + [("charge", "usage")]
                for report in 1...3 {
                    let answer = try await rls.shouldRateLimit(rlsRequest(hits: 400_000, [usage]))
                    #expect(answer.overallCode == .ok)
                    #expect(answer.statuses[0].currentLimit.requestsPerUnit == 1_000_000)
                    #expect(answer.statuses[0].limitRemaining == UInt32(max(0, 1_000_000 - 400_000 * report)))
                }
                // 1,200,000 tokens used of 1,000,000: a call estimating nothing is refused on tokens.
                let call = try await rls.shouldRateLimit(rlsRequest([Self.freeText]))
                #expect(call.overallCode == .overLimit)
                #expect(call.bodyText.contains("tokens"))
                #expect(call.header("Retry-After") == "60")
                // A report of no units is a no-op, answered OK.
                let empty = try await rls.shouldRateLimit(rlsRequest([usage]))
                #expect(empty.overallCode == .ok)
            }
            // The usage endpoint caps `used` at the limit; the metric has the exact units.
            #expect(try await client.used(account: "free-1", scope: "text/MiniMax-M2", dimension: "tokens") == 1_000_000)
            #expect(try await client.used(account: "free-1", scope: "text/MiniMax-M2", dimension: "requests") == 0)
            #expect(try await client.metrics().contains("weir_envoy_usage_units_total 1200000"))
        }
    }
}
