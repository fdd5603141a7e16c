import AsyncHTTPClient
import Foundation
import GRPCCore
import HummingbirdTesting
import Logging
import NIOCore
import NIOHTTP1
import SwiftProtobuf
import Testing
import WeirCore
import WeirEnvoy
import WeirMockUpstream
import WeirServer

/// A fixed script of calls through every shape of `weir serve` (the decision API, the
/// admin API, the gateway in front of the mock upstream, and the Envoy rate limit
/// service) on a `ManualClock`, answered over real sockets and compared byte for byte
/// with `Golden/transcript.txt`, recorded before the single-path restructuring.
///
/// What differs from run to run is replaced before comparing, and only that: lease ids,
/// API keys and their prefixes (random by design), wall-clock timestamps of the
/// registry, the `Date` header, and the mock upstream's random completion ids and
/// `created` times. Everything else (statuses, every other header, bodies, gRPC
/// answers in protobuf text form) must be identical.
///
/// Record anew (only when an answer is meant to change): `WEIR_RECORD_GOLDEN=1 swift
/// test --filter GoldenTranscript`.
@Suite("Golden transcript", .timeLimit(.minutes(2)))
struct GoldenTranscriptTests {
    static let config = """
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
            default_output_reservation: 100
            limits:
              free: {requests: 3, tokens: 1000, concurrency: 2}
              paid: {requests: 10, tokens: 5000, concurrency: 3}
          - name: speech
            api: t2a
            models: [speech-2.6-hd]
            meter: characters
            algorithm: gcra
            burst: 30s
            limits:
              all: {requests: 4, tokens: 40}
          - name: music
            api: music-generation
            models: [Music-2.0]
            limits:
              all: {requests: 5, concurrency: 1}
          - name: images
            api: image-generation
            models: [image-01]
            meter: images
            shadow: true
            limits:
              all: {requests: 2, tokens: 3}
        """

    static var goldenPath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/transcript.txt").path
    }

    @Test("every shape answers byte for byte as recorded")
    func replay() async throws {
        let transcript = try await Self.record()
        if ProcessInfo.processInfo.environment["WEIR_RECORD_GOLDEN"] == "1" {
            try transcript.write(toFile: Self.goldenPath, atomically: true, encoding: .utf8)
            return
        }
        let golden = try String(contentsOfFile: Self.goldenPath, encoding: .utf8)
        let expected = golden.components(separatedBy: "\n")
        let actual = transcript.components(separatedBy: "\n")
        for (index, line) in expected.enumerated() where index >= actual.count || actual[index] != line {
            Issue.record("line \(index + 1) differs:\n  recorded: \(line)\n  now:      \(index < actual.count ? actual[index] : "(none)")")
            break
        }
        #expect(actual.count == expected.count, "the transcript has \(actual.count) lines, the recording \(expected.count)")
    }

    /// Runs the script and returns its transcript, normalised.
    static func record() async throws -> String {
        let silent = Logger(label: "weir-golden", factory: { _ in SwiftLogNoOpLogHandler() })
        let control = MockUpstreamControl()
        let upstream = MockUpstream.build(configuration: MockUpstreamConfiguration(port: 0, musicMilliseconds: 1, logger: silent), control: control)
        return try await upstream.test(.live) { upstreamClient in
            let directory = scratchDirectory()
            let configPath = directory + "/weir.yaml"
            try config.write(toFile: configPath, atomically: true, encoding: .utf8)
            let harness = WeirHarness(configPath: configPath)
            var configuration = harness.configuration
            configuration.gateway = GatewayConfiguration(
                upstream: URL(string: "http://127.0.0.1:\(try #require(upstreamClient.port))")!,
                upstreamKey: nil, timeout: 10 * Nanoseconds.perSecond, forwardUnknown: false, maxResponseSize: 1 << 20)
            let app = try await buildApplication(configuration: configuration)
            return try await app.test(.live) { client in
                let script = Script(port: try #require(client.port), clock: harness.clock)
                do {
                    try await script.run(grpcPort: try await harness.ports.port())
                } catch {
                    try? await script.http.shutdown()
                    throw error
                }
                try await script.http.shutdown()
                return script.normalised()
            }
        }
    }

    /// The calls, in order, and what they answered.
    final class Script: @unchecked Sendable {
        let port: Int
        let clock: ManualClock
        let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup)
        var lines: [String] = []
        var keys: [String] = []

        init(port: Int, clock: ManualClock) {
            self.port = port
            self.clock = clock
        }

        func note(_ text: String) { lines.append("# " + text) }

        func advance(seconds: UInt64, milliseconds: UInt64 = 0) {
            clock.advance(by: seconds * Nanoseconds.perSecond + milliseconds * Nanoseconds.perMillisecond)
            note("clock +\(seconds)s\(milliseconds > 0 ? " \(milliseconds)ms" : "")")
        }

        /// One HTTP/1.1 exchange over a real socket; returns the body.
        @discardableResult
        func send(
            _ method: HTTPMethod, _ path: String, _ body: String? = nil, headers: [(String, String)] = [],
            admin: Bool = false
        ) async throws -> String {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
            request.method = method
            if body != nil { request.headers.add(name: "Content-Type", value: "application/json") }
            if admin { request.headers.add(name: "Authorization", value: "Bearer \(adminToken)") }
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            if let body { request.body = .bytes(ByteBuffer(string: body)) }
            let response = try await http.execute(request, timeout: .seconds(20))
            let bytes = try await response.body.collect(upTo: 4 << 20)
            let text = String(buffer: bytes)
            lines.append("> \(method.rawValue) \(path)" + (body.map { " " + $0 } ?? ""))
            lines.append("< \(response.status.code) \(response.status.reasonPhrase)")
            // The mock upstream's completion ids vary in length: where its body is passed
            // through, the length is checked against the body instead of recorded.
            let variable = text.contains("chatcmpl-mock-")
            let fields = response.headers
                .filter { $0.name.lowercased() != "date" }
                .map { field in
                    let name = field.name.lowercased()
                    if variable, name == "content-length" {
                        return "content-length: " + (Int(field.value) == bytes.readableBytes ? "<the body's>" : field.value)
                    }
                    return "\(name): \(field.value)"
                }
            lines.append(contentsOf: fields.map { "  " + $0 })
            lines.append(contentsOf: text.split(separator: "\n", omittingEmptySubsequences: false).map { "  | " + $0 })
            return text
        }

        func json(_ text: String) -> [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
        }

        /// Every API key and lease id, in order of first appearance, named by position.
        func normalised() -> String {
            var text = lines.joined(separator: "\n") + "\n"
            for (index, key) in keys.enumerated() {
                text = text.replacingOccurrences(of: key, with: "<api-key-\(index + 1)>")
            }
            text = Self.numbering(text, pattern: "[0-9a-f]{16}", name: "lease")
            text = Self.numbering(text, pattern: "weir_[A-Za-z0-9]{8}", name: "key-prefix")
            text = Self.replacing(text, pattern: #"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"#, with: "<timestamp>")
            text = Self.replacing(text, pattern: #"chatcmpl-mock-\d+"#, with: "<completion-id>")
            text = Self.replacing(text, pattern: #""created": ?\d+"#, with: #""created":<time>"#)
            return text
        }

        static func replacing(_ text: String, pattern: String, with replacement: String) -> String {
            let regex = try! NSRegularExpression(pattern: pattern)
            return regex.stringByReplacingMatches(
                in: text, range: NSRange(text.startIndex..., in: text), withTemplate: NSRegularExpression.escapedTemplate(for: replacement))
        }

        static func numbering(_ text: String, pattern: String, name: String) -> String {
            let regex = try! NSRegularExpression(pattern: "(?<![0-9A-Za-z_])" + pattern + "(?![0-9A-Za-z_])")
            var names: [String: String] = [:]
            var result = ""
            var last = text.startIndex
            for match in regex.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                let range = Range(match.range, in: text)!
                let found = String(text[range])
                let label = names[found] ?? "<\(name)-\(names.count + 1)>"
                names[found] = label
                result += text[last..<range.lowerBound] + label
                last = range.upperBound
            }
            return result + text[last...]
        }

        func run(grpcPort: Int) async throws {
            note("admin: accounts, keys, recharges, overrides")
            try await send(.PUT, "/admin/v1/accounts/acme", "{}", admin: true)
            let acmeKey = json(try await send(.POST, "/admin/v1/accounts/acme/keys", admin: true))["api_key"] as? String ?? "?"
            keys.append(acmeKey)
            try await send(.POST, "/admin/v1/accounts/acme/recharges", #"{"amount": 10}"#, admin: true)
            try await send(.PUT, "/admin/v1/accounts/globex", #"{"overrides": [{"rule": "chat", "requests": 4}]}"#, admin: true)
            let globexKey = json(try await send(.POST, "/admin/v1/accounts/globex/keys", admin: true))["api_key"] as? String ?? "?"
            keys.append(globexKey)
            try await send(.POST, "/admin/v1/accounts/globex/recharges", #"{"amount": 25}"#, admin: true)
            try await send(.GET, "/admin/v1/accounts/globex", admin: true)
            try await send(.PUT, "/admin/v1/accounts/acme", #"{"tier": "nope"}"#, admin: true)
            try await send(.GET, "/admin/v1/accounts/acme", admin: false)

            note("decision API")
            let first = json(try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "text", "model": "MiniMax-M2", "units": 300}"#))
            try await send(.POST, "/v1/acquire", #"{"api_key": "\#(acmeKey)", "api": "text", "model": "MiniMax-M2", "units": 200, "lease_ttl_ms": 1000}"#)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "text", "model": "MiniMax-M2", "units": 800}"#)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "text", "model": "MiniMax-M2", "units": 5000}"#)
            try await send(.POST, "/v1/settle", #"{"lease": "\#(first["lease"] as? String ?? "")", "units": 120}"#)
            try await send(.POST, "/v1/settle", #"{"lease": "\#(first["lease"] as? String ?? "")", "units": 120}"#)
            try await send(.POST, "/v1/settle", #"{"lease": "00000000000000ff", "units": 1}"#)
            try await send(.POST, "/v1/settle", #"{"lease": "nope", "units": 1}"#)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "text", "model": "MiniMax-M2"}"#)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "text", "model": "MiniMax-M2"}"#)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "text", "model": "MiniMax-M2"}"#)
            try await send(.POST, "/v1/acquire", #"{"account": "globex", "api": "text", "model": "MiniMax-M2", "units": 10}"#)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "t2a", "model": "speech-2.6-hd", "units": 30}"#)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "t2a", "model": "speech-2.6-hd", "units": 30}"#)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "image-generation", "model": "image-01", "units": 4}"#)
            let music = json(try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "music-generation", "model": "Music-2.0"}"#))
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "music-generation", "model": "Music-2.0"}"#)
            try await send(.POST, "/v1/settle", #"{"lease": "\#(music["lease"] as? String ?? "")", "units": 0}"#)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "music-generation", "model": "Music-2.0"}"#)
            note("decision API: bad input")
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "text""#)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "text", "model": "nope"}"#)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "nope", "model": "x"}"#)
            try await send(.POST, "/v1/acquire", #"{"api_key": "wk_unknown", "api": "text", "model": "MiniMax-M2"}"#)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "text", "model": "MiniMax-M2", "units": -1}"#)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "text", "model": "MiniMax-M2", "units": 18446744073709551616}"#)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "text", "model": "MiniMax-M2", "lease_ttl_ms": 0}"#)
            try await send(.POST, "/v1/acquire", #"[1, 2]"#)
            try await send(.GET, "/admin/v1/accounts/initech/usage", admin: true)
            advance(seconds: 59, milliseconds: 500)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "text", "model": "MiniMax-M2", "units": 10}"#)
            advance(seconds: 1)
            try await send(.POST, "/v1/acquire", #"{"account": "initech", "api": "text", "model": "MiniMax-M2", "units": 10}"#)
            try await send(.GET, "/admin/v1/accounts/initech/usage", admin: true)

            note("gateway")
            let chat = #"{"model": "MiniMax-M2", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 50}"#
            let bearer = { (key: String) in [("Authorization", "Bearer \(key)")] }
            try await send(.POST, "/v1/text/chatcompletion_v2", chat, headers: bearer(acmeKey))
            try await send(.POST, "/v1/chat/completions", chat, headers: bearer(acmeKey))
            let streamed = #"{"model": "MiniMax-M2", "stream": true, "messages": [{"role": "user", "content": "stream it"}], "max_tokens": 40}"#
            try await send(.POST, "/v1/chat/completions", streamed, headers: bearer(acmeKey))
            try await send(.POST, "/v1/text/chatcompletion_v2", streamed, headers: bearer(acmeKey))
            try await send(.POST, "/v1/t2a_v2", #"{"model": "speech-2.6-hd", "text": "twelve chars"}"#, headers: bearer(acmeKey))
            try await send(.POST, "/v1/image_generation", #"{"model": "image-01", "prompt": "a weir", "n": 2}"#, headers: bearer(acmeKey))
            try await send(.POST, "/v1/music_generation", #"{"model": "Music-2.0", "prompt": "calm", "lyrics": "la"}"#, headers: bearer(acmeKey))
            try await send(.POST, "/v1/chat/completions", chat, headers: bearer("wk_not_a_key"))
            try await send(.POST, "/v1/text/chatcompletion_v2", chat, headers: bearer("wk_not_a_key"))
            try await send(.POST, "/v1/chat/completions", #"{"model": "MiniMax-M2", "messages": "#, headers: bearer(acmeKey))
            try await send(.POST, "/v1/chat/completions", #"{"model": "nope", "messages": []}"#, headers: bearer(acmeKey))
            try await send(.POST, "/v1/chat/completions", chat, headers: bearer(globexKey))
            for _ in 0..<3 { try await send(.POST, "/v1/text/chatcompletion_v2", chat, headers: bearer(globexKey)) }
            try await send(.POST, "/v1/chat/completions", chat, headers: bearer(globexKey))
            try await send(.GET, "/admin/v1/accounts/acme/usage", admin: true)

            note("envoy rate limit service")
            let answers = try await withRateLimitClient(port: grpcPort) { rls in
                var answers: [String] = []
                let requests: [(String, RLSRequest)] = [
                    ("account", rlsRequest([[("account", "umbrella"), ("api", "text"), ("model", "MiniMax-M2")]])),
                    ("api key", rlsRequest([[("api_key", "Bearer \(acmeKey)"), ("api", "text"), ("model", "MiniMax-M2")]])),
                    ("hits", rlsRequest(hits: 700, [[("account", "umbrella"), ("api", "text"), ("model", "MiniMax-M2")]])),
                    ("too large", rlsRequest(hits: 7000, [[("account", "umbrella"), ("api", "text"), ("model", "MiniMax-M2")]])),
                    ("two descriptors", rlsRequest([
                        [("account", "umbrella"), ("api", "t2a"), ("model", "speech-2.6-hd")],
                        [("account", "umbrella"), ("api", "music-generation"), ("model", "Music-2.0")],
                    ], descriptorHits: [25, nil])),
                    ("unknown descriptor", rlsRequest([[("tenant", "x")]])),
                    ("unknown model", rlsRequest([[("account", "umbrella"), ("api", "text"), ("model", "nope")]])),
                    ("other domain", rlsRequest(domain: "other", [[("account", "umbrella"), ("api", "text"), ("model", "MiniMax-M2")]])),
                ]
                for (name, request) in requests {
                    for _ in 0..<(name == "account" ? 4 : 1) {
                        let answer = try await rls.shouldRateLimit(request)
                        answers.append("> ShouldRateLimit (\(name))")
                        answers.append(contentsOf: answer.textFormatString().split(separator: "\n").map { "  | " + $0 })
                    }
                }
                return answers
            }
            lines.append(contentsOf: answers)
            try await send(.GET, "/admin/v1/accounts/umbrella/usage", admin: true)
        }
    }
}
