import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import WeirCore
import WeirServer
import WeirRedisTesting

@Suite("Health, readiness, metrics, reload")
struct OperationsTests {
    @Test("healthz and readyz", arguments: [TestingSetup.router, .live])
    func health(setup: TestingSetup) async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(setup) { client in
            let health = try await client.execute(uri: "/healthz", method: .get)
            #expect(health.status == .ok)
            let ready = try await client.execute(uri: "/readyz", method: .get)
            #expect(ready.status == .ok)
            #expect(try ready.json["registry"] as? String == "ok")
        }
    }

    @Test("metrics count decisions by api, model, outcome and reason, with catalogue labels only")
    func metrics() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.router) { client in
            for _ in 0..<21 {
                _ = try await client.post("/v1/acquire", #"{"account": "a", "api": "text", "model": "MiniMax-M2"}"#)
            }
            _ = try await client.post("/v1/acquire", #"{"account": "a", "api": "voice-design", "model": "anything-at-all"}"#)
            _ = try await client.post("/v1/acquire", #"{"account": "a", "api": "text", "model": "made-up-model"}"#)
            let response = try await client.execute(uri: "/metrics", method: .get)
            #expect(response.status == .ok)
            #expect(response.headers[.contentType]?.hasPrefix("text/plain") == true)
            let text = response.text
            #expect(text.contains(#"weir_decisions_total{api="text",model="MiniMax-M2",outcome="allowed",reason="none"} 20"#))
            #expect(text.contains(#"weir_decisions_total{api="text",model="MiniMax-M2",outcome="denied",reason="requests"} 1"#))
            #expect(text.contains(#"weir_decisions_total{api="voice-design",model="*",outcome="allowed",reason="none"} 1"#))
            // 80% of 20 is 16: the 16th to 20th admissions leave 4..0 remaining.
            #expect(text.contains(#"weir_near_limit_total{api="text",model="MiniMax-M2",dimension="requests"} 5"#))
            #expect(text.contains("weir_active_leases 21"))
            #expect(text.contains("weir_decision_duration_seconds_bucket"))
            #expect(!text.contains("anything-at-all"))
            #expect(!text.contains("made-up-model"))
        }
    }

    static let smallConfig = """
        tiers:
          - name: free
            recharge_threshold: 0
          - name: paid
            recharge_threshold: 10
        rules:
          - name: chat
            api: text
            models: [MiniMax-M2]
            meter: tokens
            limits:
              all: {requests: 3, tokens: 1000}
        """

    @Test("reload: a valid file takes effect, an invalid one is rejected and the old one kept")
    func reload() async throws {
        let directory = scratchDirectory()
        let path = directory + "/weir.yaml"
        try Self.smallConfig.write(toFile: path, atomically: true, encoding: .utf8)
        let logs = LogCapture()
        let app = try await buildApplication(configuration: testConfiguration(configPath: path, logs: logs))
        try await app.test(.router) { client in
            let first = try await client.post("/v1/acquire", #"{"account": "a", "api": "text", "model": "MiniMax-M2"}"#)
            #expect(int(try first.limit("requests"), "limit") == 3)

            try "rules: [".write(toFile: path, atomically: true, encoding: .utf8)
            let rejected = try await client.admin(.post, "/admin/v1/reload")
            #expect(rejected.status == .unprocessableContent)
            #expect(try (rejected.json["error"] as? [String: Any])?["details"] is [Any])
            #expect(logs.text.contains("config reload rejected"))
            let still = try await client.post("/v1/acquire", #"{"account": "a", "api": "text", "model": "MiniMax-M2"}"#)
            #expect(int(try still.limit("requests"), "limit") == 3)

            try Self.smallConfig.replacingOccurrences(of: "requests: 3", with: "requests: 7")
                .write(toFile: path, atomically: true, encoding: .utf8)
            let reloaded = try await client.admin(.post, "/admin/v1/reload")
            #expect(reloaded.status == .ok)
            let after = try await client.post("/v1/acquire", #"{"account": "a", "api": "text", "model": "MiniMax-M2"}"#)
            #expect(int(try after.limit("requests"), "limit") == 7)
            // Usage survives the reload: 3 admitted so far.
            #expect(int(try after.limit("requests"), "remaining") == 4)
        }
    }

    @Test("reload without a config file is 409")
    func reloadBuiltIn() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.router) { client in
            let response1 = try await client.admin(.post, "/admin/v1/reload")
            #expect(response1.status == .conflict)
        }
    }

    @Test("an invalid config file fails start-up with its errors")
    func invalidConfig() async throws {
        let path = scratchDirectory() + "/bad.yaml"
        try "tiers: []\nrules: 5\n".write(toFile: path, atomically: true, encoding: .utf8)
        await #expect(throws: (any Error).self) {
            _ = try await buildApplication(configuration: testConfiguration(configPath: path))
        }
    }

    @Test("API keys declared in the config by hash are accepted")
    func configKeyHashes() async throws {
        let key = "sk-config-declared-key"
        let digest = sha256Hex(key)
        let path = scratchDirectory() + "/weir.yaml"
        try (Self.smallConfig + "\naccounts:\n  - id: cfg\n    api_key_hashes: [\(digest)]\n    tier: paid\n")
            .write(toFile: path, atomically: true, encoding: .utf8)
        let app = try await buildApplication(configuration: testConfiguration(configPath: path))
        try await app.test(.router) { client in
            let response = try await client.post("/v1/acquire", #"{"api_key": "\#(key)", "api": "text", "model": "MiniMax-M2"}"#)
            #expect(response.status == .ok, "\(response.text)")
            #expect(try response.json["tier"] as? String == "paid")
        }
    }
}

/// SHA-256 through the system's sha256sum, independent of the server's own code.
func sha256Hex(_ text: String) -> String {
    let output = (try? ChildProcess.run("/usr/bin/sha256sum", [], input: text))?.output ?? ""
    return output.split(separator: " ").first.map(String.init) ?? ""
}
