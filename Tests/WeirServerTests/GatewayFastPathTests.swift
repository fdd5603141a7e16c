import Foundation
import Testing
import WeirCore
import WeirServer

/// The gateway's non-streaming calls answered on the event loop (`DecisionFastPath`
/// with `Gateway.send`): what only that path does. Everything else about these calls
/// (headers, usage, settlement, failures) is in `GatewayTests`, which runs over real
/// sockets and so through this path as well.
@Suite("Gateway calls on the event loop", .serialized, .timeLimit(.minutes(2)))
struct GatewayFastPathTests {
    static let chat = GatewayTests.chat
    static let chatEstimate = GatewayTests.chatEstimate

    @Test("requests pipelined behind an upstream call wait for its answer and are answered in order")
    func pipeliningBehindAnUpstreamCall() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            // Another account: the acquire's lease would hold acme's only concurrency slot.
            let acquire = #"{"account":"other","api":"text","model":"MiniMax-M2"}"#
            let chat = Self.chat
            // The upstream takes 200 ms to answer: the acquire and the health check
            // arrive long before, and must still come after the chat's answer.
            let requests =
                "POST /v1/text/chatcompletion_v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(key)\r\n"
                + "x-mock-stall-ms: 200\r\nx-mock-completion-tokens: 10\r\nContent-Length: \(chat.utf8.count)\r\n\r\n\(chat)"
                + "POST /v1/acquire HTTP/1.1\r\nHost: x\r\nContent-Length: \(acquire.utf8.count)\r\n\r\n\(acquire)"
                + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                + "POST /v1/text/chatcompletion_v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(key)\r\nConnection: close\r\n"
                + "x-mock-completion-tokens: 10\r\nContent-Length: \(chat.utf8.count)\r\n\r\n\(chat)"
            let text = try await RawHTTP.exchange(port: gateway.port, request: requests)
            let statusLines = text.components(separatedBy: "HTTP/1.1 ").dropFirst()
                .map { "HTTP/1.1 " + ($0.components(separatedBy: "\r\n").first ?? "") }
            #expect(statusLines == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"])
            let usage = try #require(text.range(of: #""total_tokens""#)?.lowerBound)
            let allowed = try #require(text.range(of: #""allowed":true"#)?.lowerBound)
            let healthy = try #require(text.range(of: #"{"status":"ok"}"#)?.lowerBound)
            let secondUsage = try #require(text.range(of: #""total_tokens""#, range: healthy..<text.endIndex)?.lowerBound)
            #expect(usage < allowed && allowed < healthy && healthy < secondUsage)
            // Both calls of acme were admitted and settled: its slot is free again.
            #expect(text.components(separatedBy: "x-ratelimit-remaining-requests: 999").count == 3)
            #expect(text.contains("x-ratelimit-remaining-requests: 998"))
            // Only the acquire's lease is held: both gateway calls settled theirs.
            #expect(try await gateway.activeLeases() == 1)
            #expect(try await gateway.used("acme", rule: "chat", dimension: "concurrency") == 0)
        }
    }

    @Test("an upstream body over the size limit: 502 naming the limit, the estimate charged, the slot freed")
    func responseTooLarge() async throws {
        try await GatewayHarness.run(maxResponseSize: 64) { gateway in
            let key = try await gateway.key(for: "acme")
            let answer = try await gateway.send(
                "/v1/text/chatcompletion_v2", body: Self.chat, key: key, headers: ["x-mock-completion-tokens": "10"])
            #expect(answer.status == 502)
            #expect(answer.miniMaxCode == 1000)
            #expect(answer.body.contains("response larger than 64 bytes"))
            #expect(try await gateway.used("acme", rule: "chat", dimension: "tokens") == Self.chatEstimate)
            #expect(try await gateway.used("acme", rule: "chat", dimension: "concurrency") == 0)
            #expect(try await gateway.activeLeases() == 0)
        }
    }

    @Test("a client that goes away during a call: the call runs to its end upstream, then its lease is settled and its slot freed")
    func clientGoesAway() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            gateway.control.hold()
            let body = #"{"model": "Music-2.0", "prompt": "calm piano"}"#
            try RawHTTP.sendAndClose(
                port: gateway.port,
                request: "POST /v1/music_generation HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(key)\r\n"
                    + "x-mock-duration-ms: 0\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            try await gateway.eventually("the call runs upstream") { gateway.control.callsInFlight == 1 }
            #expect(try await gateway.used("acme", rule: "music", dimension: "concurrency") == 1)
            gateway.control.release()
            try await gateway.eventually("the slot is freed") {
                try await gateway.used("acme", rule: "music", dimension: "concurrency") == 0
            }
            #expect(try await gateway.activeLeases() == 0)
            #expect(try await gateway.send("/v1/music_generation", body: body, key: key, headers: ["x-mock-duration-ms": "0"]).status == 200)
        }
    }

    @Test("a streaming call is relayed in chunks on the event loop, and one with a query string passes its query on")
    func streamingAndQueries() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            let stream = #"{"model": "MiniMax-M2", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 100, "stream": true}"#
            let streamed = try await gateway.send(
                "/v1/text/chatcompletion_v2", body: stream, key: key, headers: ["x-mock-completion-tokens": "3"])
            #expect(streamed.status == 200)
            #expect(streamed.header("content-type")?.hasPrefix("text/event-stream") == true)
            #expect(streamed.header("transfer-encoding") == "chunked")
            #expect(streamed.header("x-ratelimit-limit-requests") != nil)
            #expect(streamed.body.contains("data: "))
            let queried = try await gateway.send(
                "/v1/text/chatcompletion_v2?trace=1", body: Self.chat, key: key, headers: ["x-mock-completion-tokens": "10"])
            #expect(queried.status == 200)
            #expect(gateway.control.requestsReceived.last?.path == "/v1/text/chatcompletion_v2?trace=1")
            #expect(try await gateway.activeLeases() == 0)
        }
    }

    @Test("a stream and requests pipelined behind it: the stream's chunks end before the next answer begins")
    func pipeliningBehindAStream() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            let stream = #"{"model": "MiniMax-M2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100, "stream": true}"#
            let requests =
                "POST /v1/text/chatcompletion_v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(key)\r\n"
                + "x-mock-completion-tokens: 6\r\nContent-Length: \(stream.utf8.count)\r\n\r\n\(stream)"
                + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                + "POST /v1/text/chatcompletion_v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(key)\r\nConnection: close\r\n"
                + "x-mock-completion-tokens: 10\r\nContent-Length: \(Self.chat.utf8.count)\r\n\r\n\(Self.chat)"
            let text = try await RawHTTP.exchange(port: gateway.port, request: requests)
            let statusLines = text.components(separatedBy: "HTTP/1.1 ").dropFirst()
                .map { "HTTP/1.1 " + ($0.components(separatedBy: "\r\n").first ?? "") }
            #expect(statusLines == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"])
            // The stream's last chunk, then the health check, then the second call.
            let lastChunk = try #require(text.range(of: "\r\n0\r\n\r\n")?.lowerBound)
            let healthy = try #require(text.range(of: #"{"status":"ok"}"#)?.lowerBound)
            let usage = try #require(text.range(of: #""total_tokens""#, range: healthy..<text.endIndex)?.lowerBound)
            #expect(lastChunk < healthy && healthy < usage)
            #expect(try await gateway.activeLeases() == 0)
        }
    }

    @Test("the idle timeout never cuts a call waiting on the upstream, nor a stream whose events come slower than it")
    func idleTimeoutSparesCallsInFlight() async throws {
        try await GatewayHarness.run(limits: ConnectionLimits(idleTimeout: 150_000_000)) { gateway in
            let key = try await gateway.key(for: "acme")
            let slow = try await gateway.send(
                "/v1/text/chatcompletion_v2", body: Self.chat, key: key,
                headers: ["x-mock-stall-ms": "400", "x-mock-completion-tokens": "10"])
            #expect(slow.status == 200)
            #expect(slow.body.contains("total_tokens"))
            let stream = #"{"model": "MiniMax-M2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100, "stream": true}"#
            let streamed = try await gateway.send(
                "/v1/text/chatcompletion_v2", body: stream, key: key,
                headers: ["x-mock-completion-tokens": "16", "x-mock-event-interval-ms": "200"])
            #expect(streamed.status == 200)
            #expect(streamed.body.contains("data: [DONE]") || GatewayHarness.events(streamed.body).count >= 2, "\(streamed.body.suffix(120))")
            #expect(try await gateway.activeLeases() == 0)
        }
    }

    @Test("a gateway call over the body limit: 413 in the path's dialect, nothing forwarded, the connection closed")
    func oversizedCall() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            let huge = #"{"model": "MiniMax-M2", "messages": [{"role": "user", "content": ""# + String(repeating: "x", count: 1 << 20) + #""}]}"#
            let native = try await gateway.send("/v1/text/chatcompletion_v2", body: huge, key: key)
            #expect(native.status == 413)
            #expect(native.miniMaxCode != nil, "MiniMax's envelope on its own path: \(native.body.prefix(200))")
            let openAI = try await gateway.send("/v1/chat/completions", body: huge, key: key)
            #expect(openAI.status == 413)
            #expect((openAI.json["error"] as? [String: Any]) != nil, "OpenAI's envelope: \(openAI.body.prefix(200))")
            #expect(gateway.control.requestsReceived.isEmpty)
            #expect(try await gateway.activeLeases() == 0)
        }
    }
}
