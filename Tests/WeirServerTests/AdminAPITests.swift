import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import WeirCore
import WeirServer

@Suite("Admin API")
struct AdminAPITests {
    @Test("without a configured token every admin call is 403 and says why")
    func disabled() async throws {
        let app = try await buildApplication(configuration: testConfiguration(adminToken: nil))
        try await app.test(.router) { client in
            for token in [nil, "anything"] as [String?] {
                let response = try await client.admin(.put, "/admin/v1/accounts/acme", "{}", token: token)
                #expect(response.status == .forbidden)
                let message = try errorField(response).message ?? ""
                #expect(message.contains("no admin token is configured"))
                #expect(message.contains("WEIR_ADMIN_TOKEN"))
            }
        }
    }

    @Test("a missing or wrong token is 401")
    func refusals() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.router) { client in
            let missing = try await client.admin(.put, "/admin/v1/accounts/acme", "{}", token: nil)
            #expect(missing.status == .unauthorized)
            let wrong = try await client.admin(.put, "/admin/v1/accounts/acme", "{}", token: "test-admin-tokeN")
            #expect(wrong.status == .unauthorized)
            #expect(try errorField(wrong).message == "wrong admin token")
            let basic = try await client.execute(
                uri: "/admin/v1/accounts/acme", method: .put, headers: [.authorization: "Basic dGVzdA=="],
                body: ByteBuffer(string: "{}"))
            #expect(basic.status == .unauthorized)
            let right = try await client.admin(.put, "/admin/v1/accounts/acme", "{}")
            #expect(right.status == .created)
        }
    }

    @Test("recharge turns the free tier into 500 RPM for MiniMax-M2-Stable at once", arguments: [TestingSetup.router, .ahc(.http)])
    func rechargeUpgrades(setup: TestingSetup) async throws {
        let logs = LogCapture()
        let app = try await buildApplication(configuration: testConfiguration(logs: logs))
        try await app.test(setup) { client in
            let created = try await client.admin(.put, "/admin/v1/accounts/acme", "{}")
            #expect(created.status == .created)
            #expect(try created.json["tier"] as? String == "free")
            let keyResponse = try await client.admin(.post, "/admin/v1/accounts/acme/keys")
            #expect(keyResponse.status == .created)
            let key = try #require(try keyResponse.json["api_key"] as? String)
            let prefix = try #require(try keyResponse.json["prefix"] as? String)
            #expect(key.hasPrefix(prefix + "_"))

            let acquire = #"{"api_key": "\#(key)", "api": "text", "model": "MiniMax-M2-Stable"}"#
            for _ in 0..<20 {
                let response1 = try await client.post("/v1/acquire", acquire)
                #expect(response1.status == .ok)
            }
            let denied = try await client.post("/v1/acquire", acquire)
            #expect(denied.status == .tooManyRequests)

            let recharged = try await client.admin(.post, "/admin/v1/accounts/acme/recharges", #"{"amount": 25.50}"#)
            #expect(recharged.status == .ok)
            let account = try recharged.json
            #expect(account["tier"] as? String == "paid")
            #expect((account["recharges"] as? NSNumber)?.doubleValue == 25.5)

            let allowed = try await client.post("/v1/acquire", acquire)
            #expect(allowed.status == .ok)
            #expect(try allowed.json["tier"] as? String == "paid")
            #expect(int(try allowed.limit("requests"), "limit") == 500)
            #expect(int(try allowed.limit("requests"), "remaining") == 479)
            #expect(int(try allowed.limit("tokens"), "limit") == 20_000_000)
            #expect(allowed.header("x-ratelimit-limit-requests") == "500")

            // The key never appears in the logs.
            #expect(!logs.text.contains(key))
            #expect(logs.text.contains(prefix))
        }
    }

    @Test("keys: the created key works, revoking it makes it 401")
    func keysAndRevocation() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.router) { client in
            let response2 = try await client.admin(.post, "/admin/v1/accounts/ghost/keys")
            #expect(response2.status == .notFound)
            _ = try await client.admin(.put, "/admin/v1/accounts/acme", "{}")
            let first = try await client.admin(.post, "/admin/v1/accounts/acme/keys").json
            let second = try await client.admin(.post, "/admin/v1/accounts/acme/keys").json
            let key = try #require(first["api_key"] as? String)
            let prefix = try #require(first["prefix"] as? String)
            #expect(key != second["api_key"] as? String)
            let acquire = #"{"api_key": "\#(key)", "api": "voice-cloning", "model": ""}"#
            let response3 = try await client.post("/v1/acquire", acquire)
            #expect(response3.status == .ok)

            let listed = try await client.admin(.get, "/admin/v1/accounts/acme").json
            let keys = try #require(listed["keys"] as? [[String: Any]])
            #expect(keys.count == 2)
            #expect(!String(describing: listed).contains(key))

            let revoked = try await client.admin(.delete, "/admin/v1/keys/\(prefix)")
            #expect(revoked.status == .ok)
            let response4 = try await client.post("/v1/acquire", acquire)
            #expect(response4.status == .unauthorized)
            let response5 = try await client.admin(.delete, "/admin/v1/keys/\(prefix)")
            #expect(response5.status == .notFound)
            let other = #"{"api_key": "\#(second["api_key"] as! String)", "api": "voice-cloning", "model": ""}"#
            let response6 = try await client.post("/v1/acquire", other)
            #expect(response6.status == .ok)
        }
    }

    @Test("tier pins and overrides apply to the next decision")
    func pinsAndOverrides() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.router) { client in
            let pinned = try await client.admin(.put, "/admin/v1/accounts/vip", #"{"tier": "paid"}"#)
            #expect(try pinned.json["tier"] as? String == "paid")
            #expect(try pinned.json["pinned_tier"] as? String == "paid")
            let stable = try await client.post("/v1/acquire", #"{"account": "vip", "api": "text", "model": "MiniMax-M2-Stable"}"#)
            #expect(int(try stable.limit("requests"), "limit") == 500)

            let overridden = try await client.admin(
                .put, "/admin/v1/accounts/vip",
                #"{"overrides": [{"rule": "text-minimax-m2", "requests": 1000, "tokens": 5000000}]}"#)
            #expect(overridden.status == .ok)
            #expect(try overridden.json["pinned_tier"] as? String == "paid")
            let m2 = try await client.post("/v1/acquire", #"{"account": "vip", "api": "text", "model": "MiniMax-M2"}"#)
            #expect(int(try m2.limit("requests"), "limit") == 1000)
            #expect(int(try m2.limit("tokens"), "limit") == 5_000_000)

            let unpinned = try await client.admin(.put, "/admin/v1/accounts/vip", #"{"tier": null}"#)
            #expect(try unpinned.json["tier"] as? String == "free")

            let badTier = try await client.admin(.put, "/admin/v1/accounts/vip", #"{"tier": "gold"}"#)
            #expect(badTier.status == .badRequest)
            #expect(try errorField(badTier).field == "tier")
            let badRule = try await client.admin(.put, "/admin/v1/accounts/vip", #"{"overrides": [{"rule": "nope", "requests": 1}]}"#)
            #expect(badRule.status == .badRequest)
            #expect(try errorField(badRule).field == "overrides[0].rule")
            let badFigure = try await client.admin(.put, "/admin/v1/accounts/vip", #"{"overrides": [{"rule": "t2a", "requests": -1}]}"#)
            #expect(try errorField(badFigure).field == "overrides[0].requests")
        }
    }

    @Test("recharge input is checked")
    func rechargeInput() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.router) { client in
            let response7 = try await client.admin(.post, "/admin/v1/accounts/nobody/recharges", #"{"amount": 5}"#)
            #expect(response7.status == .notFound)
            _ = try await client.admin(.put, "/admin/v1/accounts/acme", "{}")
            for body in [#"{}"#, #"{"amount": -5}"#, #"{"amount": 0}"#, #"{"amount": "5"}"#, "nope"] {
                let response = try await client.admin(.post, "/admin/v1/accounts/acme/recharges", body)
                #expect(response.status == .badRequest, "\(body)")
            }
            let account = try await client.admin(.get, "/admin/v1/accounts/acme").json
            #expect(account["tier"] as? String == "free")
        }
    }

    @Test("usage lists every limit with used, remaining and reset")
    func usage() async throws {
        let clock = ManualClock(start: 1_000 * Nanoseconds.perSecond)
        let app = try await buildApplication(configuration: testConfiguration(clock: clock))
        try await app.test(.router) { client in
            for _ in 0..<3 {
                _ = try await client.post("/v1/acquire", #"{"account": "u", "api": "text", "model": "MiniMax-M2", "units": 100}"#)
            }
            clock.advance(by: 10 * Nanoseconds.perSecond)
            let usage = try await client.admin(.get, "/admin/v1/accounts/u/usage")
            #expect(usage.status == .ok)
            let limits = try #require(try usage.json["limits"] as? [[String: Any]])
            let requests = try #require(limits.first { $0["scope"] as? String == "text/MiniMax-M2" && $0["dimension"] as? String == "requests" })
            #expect(int(requests, "used") == 3)
            #expect(int(requests, "remaining") == 17)
            #expect(int(requests, "reset_ms") == 50_000)
            let tokens = try #require(limits.first { $0["scope"] as? String == "text/MiniMax-M2" && $0["dimension"] as? String == "tokens" })
            #expect(int(tokens, "used") == 300)
            #expect(limits.contains { $0["api"] as? String == "music-generation" && $0["dimension"] as? String == "concurrency" })
            // The free tier has MiniMax-M2-Stable at 20 RPM.
            let stable = try #require(limits.first { $0["scope"] as? String == "text/MiniMax-M2-Stable" && $0["dimension"] as? String == "requests" })
            #expect(int(stable, "limit") == 20)
        }
    }
}
