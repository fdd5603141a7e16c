import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Testing
import WeirCore
import WeirEnvoy
import WeirRedisTesting

/// A real, unmodified Envoy with `envoy.filters.http.ratelimit` pointed at Weir's gRPC
/// service, in front of a small upstream, all on 127.0.0.1 and free ports. Checked
/// through Envoy, as a client of the proxied API sees it.
@Suite("Weir behind a real Envoy", .serialized, .timeLimit(.minutes(3)))
struct EnvoyIntegrationTests {
    /// The upstream: answers 200 `{"ok":true}`; reports `x-test-usage` back as
    /// `x-usage-total-tokens`, like a model API reporting the tokens a call used.
    static func withUpstream<Value: Sendable>(_ body: @Sendable (Int) async throws -> Value) async throws -> Value {
        let router = Router()
        router.post("/v1/text/chatcompletion_v2") { request, _ -> Response in
            var headers: HTTPFields = [.contentType: "application/json"]
            if let usage = request.headers[HTTPField.Name("x-test-usage")!] {
                headers[HTTPField.Name("x-usage-total-tokens")!] = usage
            }
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: #"{"ok":true}"#)))
        }
        let app = Application(
            router: router, configuration: ApplicationConfiguration(address: .hostname("127.0.0.1", port: 0)),
            logger: Logger(label: "upstream", factory: { _ in SwiftLogNoOpLogHandler() }))
        return try await app.test(.live) { client in
            try await body(try #require(client.port))
        }
    }

    /// One chat completion call through Envoy.
    static func chat(port: Int, key: String, model: String, usage: Int? = nil) async throws -> HTTP.Answer {
        var headers = [("authorization", "Bearer \(key)"), ("x-weir-model", model), ("content-type", "application/json")]
        if let usage { headers.append(("x-test-usage", String(usage))) }
        return try await HTTP.send(
            .POST, port: port, path: "/v1/text/chatcompletion_v2", headers: headers,
            body: #"{"model":"\#(model)","messages":[{"role":"user","content":"hi"}]}"#)
    }

    @Test("a free account's 21st MiniMax-M2 request in a minute is Envoy's 429 with Weir's headers and body")
    func freeAccount() async throws {
        let harness = WeirHarness()
        try await Self.withUpstream { upstreamPort in
            try await harness.run { client, grpcPort in
                let key = try await client.createAccount("free-acct")
                let envoy = try await EnvoyProcess(config: EnvoyConfig.config(
                    listeners: [EnvoyConfig.listener(name: "edge", failureModeDeny: false)],
                    upstreamPort: upstreamPort, weirPort: grpcPort))
                defer { envoy.stop() }
                let port = try envoy.port("edge")
                for call in 1...20 {
                    let answer = try await Self.chat(port: port, key: key, model: "MiniMax-M2")
                    #expect(answer.status == 200, "call \(call): \(answer.body)\n\(envoy.log)")
                    #expect(answer.body == #"{"ok":true}"#)
                    // Allowed answers carry Weir's headers too, once.
                    #expect(answer.header("x-ratelimit-remaining-requests") == String(20 - call))
                    #expect(answer.count("x-ratelimit-limit-requests") == 1)
                    #expect(answer.header("content-type") == "application/json")
                    #expect(answer.count("content-type") == 1)
                }
                harness.clock.advance(by: 20 * Nanoseconds.perSecond)
                let denied = try await Self.chat(port: port, key: key, model: "MiniMax-M2")
                #expect(denied.status == 429)
                #expect(denied.header("x-ratelimit-limit-requests") == "20")
                #expect(denied.header("x-ratelimit-remaining-requests") == "0")
                #expect(denied.header("x-ratelimit-reset-requests") == "40s")
                #expect(denied.header("x-ratelimit-limit-tokens") == "1000000")
                #expect(denied.header("ratelimit-policy") == #""requests";q=20;w=60, "tokens";q=1000000;w=60;qu="tokens""#)
                #expect(denied.header("ratelimit") == #""requests";r=0;t=40, "tokens";r=1000000;t=0"#)
                #expect(denied.header("retry-after") == "40")
                #expect(denied.header("content-type") == "application/json")
                #expect(denied.count("content-type") == 1)
                let body = try JSONSerialization.jsonObject(with: Data(denied.body.utf8)) as? [String: Any]
                let base = body?["base_resp"] as? [String: Any]
                #expect((base?["status_code"] as? NSNumber)?.intValue == 1002)
                #expect((base?["status_msg"] as? String)?.contains("rate limit exceeded for text/MiniMax-M2") == true)
                #expect((body?["error"] as? [String: Any])?["code"] as? String == "rate_limit_exceeded")
                // Another account is not touched by this one's limit.
                let other = try await client.createAccount("other-acct")
                #expect(try await Self.chat(port: port, key: other, model: "MiniMax-M2").status == 200)
                #expect(try await envoy.stat("cluster.upstream.ratelimit.over_limit") == 1)
                // The refusal is in the dashboard's history, as one from /v1/acquire would be.
                let usage = try await client.admin(.get, "/admin/v1/usage")
                let usageText = String(buffer: usage.body)
                let accounts = try JSONSerialization.jsonObject(with: Data(usageText.utf8)) as? [String: Any]
                let refused = (accounts?["accounts"] as? [[String: Any]])?.first { $0["id"] as? String == "free-acct" }
                #expect((refused?["refused"] as? NSNumber)?.intValue == 1, "\(usageText)")
            }
        }
    }

    @Test("a paid account (recharged through the admin API) gets 500 MiniMax-M2-Stable requests a minute through Envoy")
    func paidAccount() async throws {
        let harness = WeirHarness()
        try await Self.withUpstream { upstreamPort in
            try await harness.run { client, grpcPort in
                let key = try await client.createAccount("paid-acct", recharge: 10)
                let free = try await client.createAccount("free-acct")
                let envoy = try await EnvoyProcess(config: EnvoyConfig.config(
                    listeners: [EnvoyConfig.listener(name: "edge", failureModeDeny: false)],
                    upstreamPort: upstreamPort, weirPort: grpcPort))
                defer { envoy.stop() }
                let port = try envoy.port("edge")
                var allowed = 0
                for _ in 1...500 {
                    let answer = try await Self.chat(port: port, key: key, model: "MiniMax-M2-Stable")
                    if answer.status == 200 { allowed += 1 }
                }
                #expect(allowed == 500)
                let denied = try await Self.chat(port: port, key: key, model: "MiniMax-M2-Stable")
                #expect(denied.status == 429)
                #expect(denied.header("x-ratelimit-limit-requests") == "500")
                #expect(denied.header("x-ratelimit-limit-tokens") == "20000000")
                // The same model is 20 a minute for a free account.
                let freeAnswer = try await Self.chat(port: port, key: free, model: "MiniMax-M2-Stable")
                #expect(freeAnswer.header("x-ratelimit-limit-requests") == "20")
            }
        }
    }

    @Test("apply_on_stream_done: the tokens the upstream reports are charged after the response, and enforced")
    func tokensAfterTheResponse() async throws {
        let harness = WeirHarness()
        try await Self.withUpstream { upstreamPort in
            try await harness.run { client, grpcPort in
                let key = try await client.createAccount("tokens-acct")
                let envoy = try await EnvoyProcess(config: EnvoyConfig.config(
                    listeners: [EnvoyConfig.listener(name: "edge", failureModeDeny: false)],
                    upstreamPort: upstreamPort, weirPort: grpcPort))
                defer { envoy.stop() }
                let port = try envoy.port("edge")
                for call in 1...4 {
                    let answer = try await Self.chat(port: port, key: key, model: "MiniMax-M2", usage: 300_000)
                    #expect(answer.status == 200, "call \(call)")
                    // Envoy reports usage when the stream is done, after the client has its
                    // answer. (The usage endpoint caps `used` at the limit.)
                    // The wait wakes on the server's settlements (a usage report settles an
                    // instant lease); the suite's time limit ends it if none comes.
                    let expected = min(300_000 * call, 1_000_000)
                    try await harness.signal.wait {
                        try await client.used(account: "tokens-acct", scope: "text/MiniMax-M2", dimension: "tokens") == expected
                    }
                    #expect(try await client.used(account: "tokens-acct", scope: "text/MiniMax-M2", dimension: "tokens") == expected)
                }
                // Usage reports count no requests: 4 calls, 4 requests.
                #expect(try await client.used(account: "tokens-acct", scope: "text/MiniMax-M2", dimension: "requests") == 4)
                #expect(try await client.metrics().contains("weir_envoy_usage_units_total 1200000"))
                // 1,200,000 of 1,000,000 tokens used: the next call is refused on tokens.
                let denied = try await Self.chat(port: port, key: key, model: "MiniMax-M2")
                #expect(denied.status == 429)
                #expect(denied.header("x-ratelimit-remaining-tokens") == "0")
                #expect(denied.body.contains("tokens per 1m0s"))
            }
        }
    }

    @Test("Weir down: failure_mode_deny false lets requests through, true answers 500, as Envoy's docs say")
    func failureMode() async throws {
        let harness = WeirHarness()
        try await Self.withUpstream { upstreamPort in
            let (envoy, key) = try await harness.run { client, grpcPort in
                let key = try await client.createAccount("failure-acct")
                let envoy = try await EnvoyProcess(config: EnvoyConfig.config(
                    listeners: [
                        EnvoyConfig.listener(name: "allow_mode", failureModeDeny: false),
                        EnvoyConfig.listener(name: "deny_mode", failureModeDeny: true),
                    ],
                    upstreamPort: upstreamPort, weirPort: grpcPort))
                // With Weir up, both listeners ask it.
                #expect(try await Self.chat(port: envoy.port("allow_mode"), key: key, model: "MiniMax-M2").header("x-ratelimit-remaining-requests") == "19")
                #expect(try await Self.chat(port: envoy.port("deny_mode"), key: key, model: "MiniMax-M2").header("x-ratelimit-remaining-requests") == "18")
                return (envoy, key)
            }
            // Weir has stopped: its gRPC port refuses connections.
            defer { envoy.stop() }
            let allowed = try await Self.chat(port: envoy.port("allow_mode"), key: key, model: "MiniMax-M2")
            #expect(allowed.status == 200)
            #expect(allowed.body == #"{"ok":true}"#)
            #expect(allowed.header("x-ratelimit-limit-requests") == nil)
            let refused = try await Self.chat(port: envoy.port("deny_mode"), key: key, model: "MiniMax-M2")
            #expect(refused.status == 500)
            #expect(try await envoy.stat("cluster.upstream.ratelimit.error") >= 2)
            #expect(try await envoy.stat("cluster.upstream.ratelimit.failure_mode_allowed") == 1)
        }
    }

    @Test("the README's Envoy config is one Envoy accepts")
    func readmeExample() throws {
        let readme = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("README.md")
        let text = try String(contentsOf: readme, encoding: .utf8)
        let section = try #require(text.range(of: "A complete Envoy config"))
        let start = try #require(text.range(of: "```yaml\n", range: section.upperBound..<text.endIndex))
        let end = try #require(text.range(of: "```", range: start.upperBound..<text.endIndex))
        let yaml = String(text[start.upperBound..<end.lowerBound])
        #expect(yaml.contains("envoy.filters.http.ratelimit"))
        let path = scratchDirectory() + "/readme.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        let run = try ChildProcess.run(
            try EnvoyProcess.binary(), ["--mode", "validate", "-c", path, "--log-level", "error"])
        let output = run.output + run.error
        #expect(run.status == 0, "\(output)")
        #expect(output.contains("OK"))
    }
}
