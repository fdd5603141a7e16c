import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import Testing
import WeirConformance
import WeirCore
import WeirMockUpstream
import WeirServer

/// The gateway end to end: a real HTTP client (AsyncHTTPClient) -> the gateway -> the
/// mock upstream, all on 127.0.0.1.
@Suite("Gateway mode", .serialized, .timeLimit(.minutes(2)))
struct GatewayTests {
    static let chat = #"{"model": "MiniMax-M2", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 100}"#
    /// The gateway's estimate of `chat`: 3 (reply) + 4 (message) + 1 ("user") + 3
    /// ("hello there", 11 bytes) input, plus 100 asked.
    static let chatEstimate = 111
    /// The mock's usage of `chat` with a 10-token reply: ceil(15 / 4) = 4 prompt tokens.
    static let chatUsage = 14

    @Test("native text call: forwarded, answered with the rate limit headers, settled from usage.total_tokens")
    func nativeNonStreaming() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            let answer = try await gateway.send(
                "/v1/text/chatcompletion_v2", body: Self.chat, key: key, headers: ["x-mock-completion-tokens": "10"])
            #expect(answer.status == 200)
            #expect(answer.miniMaxCode == 0)
            #expect(((answer.json["usage"] as? [String: Any])?["total_tokens"] as? NSNumber)?.intValue == Self.chatUsage)
            #expect(answer.header("x-ratelimit-limit-requests") == "1000")
            #expect(answer.header("x-ratelimit-remaining-requests") == "999")
            #expect(answer.header("x-ratelimit-limit-tokens") == "1000000")
            #expect(answer.header("x-ratelimit-remaining-tokens") == "\(1_000_000 - Self.chatEstimate)")
            #expect(answer.header("RateLimit-Policy")?.contains(#""tokens";q=1000000;w=60"#) == true)
            #expect(answer.header("RateLimit") != nil)
            #expect(try await gateway.used("acme", rule: "chat", dimension: "tokens") == Self.chatUsage)
            #expect(try await gateway.activeLeases() == 0)
            // The upstream saw the client's key (no --upstream-key-file) and the body as sent.
            let received = try #require(gateway.control.requestsReceived.last)
            #expect(received.path == "/v1/text/chatcompletion_v2")
            #expect(received.headers["authorization"] == "Bearer \(key)")
            #expect(String(decoding: received.body, as: UTF8.self) == Self.chat)
        }
    }

    @Test("t2a is metered in characters and settled from extra_info.usage_characters; a denial never reaches the upstream")
    func speechAndDenial() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            let body = #"{"model": "speech-2.6-hd", "text": "你好, world"}"#
            let first = try await gateway.send("/v1/t2a_v2", body: body, key: key)
            #expect(first.status == 200)
            #expect(((first.json["extra_info"] as? [String: Any])?["usage_characters"] as? NSNumber)?.intValue == 9)
            #expect(first.header("x-ratelimit-remaining-tokens") == "\(20_000 - 9)")
            #expect(try await gateway.used("acme", rule: "t2a", dimension: "tokens") == 9)
            #expect(try await gateway.send("/v1/t2a_v2", body: body, key: key).status == 200)
            let seen = gateway.control.requestCount

            let denied = try await gateway.send("/v1/t2a_v2", body: body, key: key)
            #expect(denied.status == 429)
            #expect(denied.miniMaxCode == 1002)
            let message = try #require((denied.json["base_resp"] as? [String: Any])?["status_msg"] as? String)
            #expect(message.contains("2 requests per 1m0s"))
            #expect(denied.header("Retry-After") == "60")
            #expect(denied.header("x-ratelimit-remaining-requests") == "0")
            #expect(denied.header("x-ratelimit-limit-tokens") == "20000")
            #expect(gateway.control.requestCount == seen)
        }
    }

    @Test("t2a streams settle from the last event's usage_characters; images reserve n and settle success_count")
    func speechStreamAndImages() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            let text = String(repeating: "a", count: 40)
            let streamed = try await gateway.send(
                "/v1/t2a_v2", body: #"{"model": "speech-2.6-hd", "stream": true, "text": "\#(text)"}"#, key: key)
            #expect(streamed.status == 200)
            #expect(streamed.header("content-type") == "text/event-stream")
            #expect(GatewayHarness.events(streamed.body).count == 3)
            #expect(try await gateway.used("acme", rule: "t2a", dimension: "tokens") == 40)

            let images = try await gateway.send(
                "/v1/image_generation", body: #"{"model": "image-01", "prompt": "a weir", "n": 3}"#, key: key)
            #expect(images.status == 200)
            #expect(images.header("x-ratelimit-remaining-tokens") == "57")
            #expect(try await gateway.used("acme", rule: "images", dimension: "tokens") == 3)
            let tooMany = try await gateway.send(
                "/v1/image_generation", body: #"{"model": "image-01", "prompt": "a weir", "n": 61}"#, key: key)
            #expect(tooMany.status == 429)
            #expect((tooMany.json["error"] as? [String: Any])?["reason"] as? String == "too_large")
            #expect(tooMany.header("Retry-After") == nil)
        }
    }

    @Test("bad input and bad keys: 401 with MiniMax code 1004, 400 naming the field, 404 off the table; nothing forwarded")
    func badInput() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            let missing = try await gateway.send("/v1/text/chatcompletion_v2", body: Self.chat)
            #expect(missing.status == 401)
            #expect(missing.miniMaxCode == 1004)
            let unknown = try await gateway.send("/v1/text/chatcompletion_v2", body: Self.chat, key: "weir_nope_nope")
            #expect(unknown.status == 401)
            #expect(unknown.miniMaxCode == 1004)
            let malformed = try await gateway.send("/v1/text/chatcompletion_v2", body: "{", key: key)
            #expect(malformed.status == 400)
            #expect(malformed.miniMaxCode == 2013)
            let noModel = try await gateway.send("/v1/text/chatcompletion_v2", body: #"{"messages": []}"#, key: key)
            #expect(noModel.status == 400)
            #expect((noModel.json["error"] as? [String: Any])?["field"] as? String == "model")
            let badMax = try await gateway.send(
                "/v1/text/chatcompletion_v2", body: #"{"model": "MiniMax-M2", "max_tokens": -5}"#, key: key)
            #expect(badMax.status == 400)
            #expect((badMax.json["error"] as? [String: Any])?["field"] as? String == "max_tokens")
            let unknownModel = try await gateway.send(
                "/v1/chat/completions", body: #"{"model": "gpt-nope", "messages": []}"#, key: key)
            #expect(unknownModel.status == 400)
            #expect((unknownModel.json["error"] as? [String: Any])?["code"] as? String == "unknown_model")
            #expect((unknownModel.json["error"] as? [String: Any])?["type"] as? String == "invalid_request_error")
            let offTable = try await gateway.send("/v1/files/upload", body: "{}", key: key)
            #expect(offTable.status == 404)
            #expect(gateway.control.requestCount == 0)
        }
    }

    @Test("--upstream-key-file: the client's key is replaced; hop-by-hop headers are not forwarded; --forward-unknown forwards other paths")
    func headersAndForwarding() async throws {
        try await GatewayHarness.run(upstreamKey: "upstream-secret", forwardUnknown: true) { gateway in
            let key = try await gateway.key(for: "acme")
            let answer = try await gateway.send(
                "/v1/voice_design", body: #"{"prompt": "a calm voice"}"#, key: key,
                headers: ["Connection": "keep-alive, x-hop", "X-Hop": "1", "Proxy-Authorization": "Basic abc", "X-Trace": "t-1", "Accept-Encoding": "gzip"])
            #expect(answer.status == 200)
            #expect(answer.header("x-ratelimit-limit-requests") == "20")
            let received = try #require(gateway.control.requestsReceived.last)
            #expect(received.headers["authorization"] == "Bearer upstream-secret")
            #expect(received.headers["x-hop"] == nil)
            #expect(received.headers["proxy-authorization"] == nil)
            #expect(received.headers["accept-encoding"] == nil)
            #expect(received.headers["x-trace"] == "t-1")

            // Off the table: forwarded untouched, unlimited (the mock has no such path: its 404).
            let other = try await gateway.send("/v1/files/list", method: .GET, key: key)
            #expect(other.status == 404)
            #expect(other.header("x-ratelimit-limit-requests") == nil)
            #expect(gateway.control.requestCount == 1)  // the mock records its own paths only
        }
    }

    @Test("SSE streams pass event by event: events arrive while the upstream is still streaming")
    func streamingIsIncremental() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            gateway.control.hold()
            let body = #"{"model": "MiniMax-M2", "stream": true, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 100}"#
            let response = try await gateway.client.execute(
                gateway.request("/v1/text/chatcompletion_v2", body: body, key: key,
                    headers: ["x-mock-completion-tokens": "24", "x-mock-hold-after-events": "2"]),
                timeout: .seconds(30))
            #expect(response.status == .ok)
            #expect(response.headers.first(name: "content-type") == "text/event-stream")
            #expect(response.headers.first(name: "x-ratelimit-limit-tokens") == "1000000")
            var text = ""
            var iterator = response.body.makeAsyncIterator()
            // Two events come through while the upstream holds the rest back.
            while GatewayHarness.events(text).count < 2, let chunk = try await iterator.next() {
                text += String(buffer: chunk)
            }
            #expect(GatewayHarness.events(text).count == 2)
            #expect(try await gateway.activeLeases() == 1)
            gateway.control.release()
            while let chunk = try await iterator.next() { text += String(buffer: chunk) }
            let events = GatewayHarness.events(text)
            #expect(events.count == 4)  // 3 content chunks of 8 tokens and the final one with usage
            #expect(events.last?.contains(#""total_tokens":28"#) == true)
            #expect(try await gateway.used("acme", rule: "chat", dimension: "tokens") == 28)
            #expect(try await gateway.activeLeases() == 0)
        }
    }

    @Test("a stream without usage settles with the input estimate plus the output streamed")
    func streamingFallbackEstimate() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            let body = #"{"model": "MiniMax-M2", "stream": true, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 100}"#
            let answer = try await gateway.send(
                "/v1/text/chatcompletion_v2", body: body, key: key,
                headers: ["x-mock-completion-tokens": "10", "x-mock-no-usage": "1"])
            #expect(answer.status == 200)
            #expect(!answer.body.contains("total_tokens"))
            // input estimate 11, output "tok " x 10 = 40 bytes = 10 tokens
            #expect(try await gateway.used("acme", rule: "chat", dimension: "tokens") == 21)
        }
    }

    @Test("an upstream 500 is passed through, settles with no usage and frees the slot")
    func upstreamError() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            let failed = try await gateway.send(
                "/v1/text/chatcompletion_v2", body: Self.chat, key: key, headers: ["x-mock-status": "500"])
            #expect(failed.status == 500)
            #expect(failed.miniMaxCode == 1000)
            #expect(failed.header("x-ratelimit-limit-tokens") == "1000000")
            #expect(try await gateway.used("acme", rule: "chat", dimension: "tokens") == 0)
            #expect(try await gateway.used("acme", rule: "chat", dimension: "concurrency") == 0)
            // concurrency 1: the next call gets the slot
            let next = try await gateway.send("/v1/text/chatcompletion_v2", body: Self.chat, key: key, headers: ["x-mock-completion-tokens": "10"])
            #expect(next.status == 200)
        }
    }

    @Test("an upstream that does not answer in time: 504 with MiniMax code 1001, the estimate charged, the slot freed")
    func upstreamTimeout() async throws {
        try await GatewayHarness.run(timeout: Nanoseconds.perSecond) { gateway in
            let key = try await gateway.key(for: "acme")
            let answer = try await gateway.send(
                "/v1/text/chatcompletion_v2", body: Self.chat, key: key, headers: ["x-mock-stall-ms": "4000"])
            #expect(answer.status == 504)
            #expect(answer.miniMaxCode == 1001)
            #expect(try await gateway.used("acme", rule: "chat", dimension: "tokens") == Self.chatEstimate)
            #expect(try await gateway.used("acme", rule: "chat", dimension: "concurrency") == 0)
            #expect(try await gateway.activeLeases() == 0)
        }
    }

    @Test("a stream that stalls past the timeout is cut, settled with what was streamed, and its slot freed")
    func streamTimeout() async throws {
        try await GatewayHarness.run(timeout: Nanoseconds.perSecond) { gateway in
            let key = try await gateway.key(for: "acme")
            gateway.control.hold()
            let body = #"{"model": "MiniMax-M2", "stream": true, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 100}"#
            await #expect(throws: (any Error).self) {
                _ = try await gateway.send(
                    "/v1/text/chatcompletion_v2", body: body, key: key,
                    headers: ["x-mock-completion-tokens": "24", "x-mock-stall-after-events": "2"])
            }
            // input estimate 11 + two events of 8 tokens
            try await gateway.eventually("the lease settles") { try await gateway.activeLeases() == 0 }
            #expect(try await gateway.used("acme", rule: "chat", dimension: "tokens") == 27)
            #expect(try await gateway.used("acme", rule: "chat", dimension: "concurrency") == 0)
        }
    }

    @Test("a connection reset mid-stream: the client sees the stream cut, the lease settles, the slot is freed")
    func resetMidStream() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            let body = #"{"model": "MiniMax-M2", "stream": true, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 100}"#
            await #expect(throws: (any Error).self) {
                _ = try await gateway.send(
                    "/v1/text/chatcompletion_v2", body: body, key: key,
                    headers: ["x-mock-completion-tokens": "24", "x-mock-reset-after-events": "1"])
            }
            try await gateway.eventually("the lease settles") { try await gateway.activeLeases() == 0 }
            #expect(try await gateway.used("acme", rule: "chat", dimension: "tokens") == 19)
            let next = try await gateway.send("/v1/text/chatcompletion_v2", body: Self.chat, key: key)
            #expect(next.status == 200)
        }
    }

    @Test("an upstream that refuses connections: 502, nothing charged, the slot freed")
    func upstreamDown() async throws {
        // A port that was free a moment ago: nothing listens there.
        let closedPort = try GatewayHarness.freePort()
        try await GatewayHarness.run(upstreamPortOverride: closedPort) { gateway in
            let key = try await gateway.key(for: "acme")
            let answer = try await gateway.send("/v1/chat/completions", body: Self.chat, key: key)
            #expect(answer.status == 502)
            let error = try #require(answer.json["error"] as? [String: Any])
            #expect(error["type"] as? String == "api_error")
            #expect(try await gateway.used("acme", rule: "chat", dimension: "tokens") == 0)
            #expect(try await gateway.used("acme", rule: "chat", dimension: "concurrency") == 0)
        }
    }

    @Test("a client that disconnects mid-stream: the lease settles, the slot is freed, the upstream call is dropped")
    func clientDisconnects() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            gateway.control.hold()
            let body = #"{"model": "MiniMax-M2", "stream": true, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 100}"#
            let request = gateway.request(
                "/v1/text/chatcompletion_v2", body: body, key: key,
                headers: ["x-mock-completion-tokens": "24", "x-mock-hold-after-events": "2"])
            let reader = Task {
                let response = try await gateway.client.execute(request, timeout: .seconds(30))
                var text = ""
                for try await chunk in response.body {
                    text += String(buffer: chunk)
                    if GatewayHarness.events(text).count >= 2 { break }
                }
                return GatewayHarness.events(text).count
            }
            // Leaving the loop drops the body: AsyncHTTPClient closes the connection.
            #expect(try await reader.value == 2)
            try await gateway.eventually("the lease settles") { try await gateway.activeLeases() == 0 }
            try await gateway.eventually("the upstream stream is dropped") { gateway.control.abandonedStreams == 1 }
            #expect(try await gateway.used("acme", rule: "chat", dimension: "tokens") == 27)
            #expect(try await gateway.used("acme", rule: "chat", dimension: "concurrency") == 0)
        }
    }

    @Test("1,000 streams aborted at random points: every slot is freed, no lease leaks, each upstream call dropped")
    func abortedStreams() async throws {
        try await GatewayHarness.run { gateway in
            // 20 accounts with one concurrency slot each; 50 rounds of one stream per
            // account, each read to a random point (the head only, or 1 to 3 events of a
            // stream the upstream keeps open) and then dropped by the client. A round
            // begins once every lease of the last one is settled: a slot that was not
            // freed would refuse the account's next stream with 429.
            gateway.control.hold()
            defer { gateway.control.release() }
            let accounts = (0..<20).map { "abort\($0)" }
            var keys: [String] = []
            for account in accounts { keys.append(try await gateway.key(for: account)) }
            let body = #"{"model": "MiniMax-M2", "stream": true, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}"#
            var random = SeededGenerator(seed: 1_000)
            var streams = 0
            for _ in 0..<50 {
                let points = keys.map { _ in Int.random(in: 0...3, using: &random) }
                let statuses = try await withThrowingTaskGroup(of: UInt.self) { group in
                    for (key, point) in zip(keys, points) {
                        let request = gateway.request(
                            "/v1/text/chatcompletion_v2", body: body, key: key,
                            headers: ["x-mock-completion-tokens": "40", "x-mock-hold-after-events": "3"])
                        group.addTask {
                            let response = try await gateway.client.execute(request, timeout: .seconds(30))
                            guard response.status == .ok, point > 0 else { return response.status.code }
                            var text = ""
                            for try await chunk in response.body {
                                text += String(buffer: chunk)
                                if GatewayHarness.events(text).count >= point { break }
                            }
                            return response.status.code
                        }
                    }
                    return try await group.reduce(into: [UInt]()) { $0.append($1) }
                }
                #expect(statuses.allSatisfy { $0 == 200 }, "every stream admitted: \(statuses)")
                streams += statuses.count
                try await gateway.eventually("every lease of the round settled") { try await gateway.activeLeases() == 0 }
            }
            #expect(streams == 1_000)
            try await gateway.eventually("every upstream stream dropped") { gateway.control.abandonedStreams == 1_000 }
            for account in accounts.prefix(3) {
                #expect(try await gateway.used(account, rule: "chat", dimension: "concurrency") == 0)
            }
        }
    }

    @Test("music generation holds a concurrency slot for the whole call: the 21st concurrent call is refused")
    func musicConcurrency() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            gateway.control.hold()
            let body = #"{"model": "Music-2.0", "prompt": "calm piano", "lyrics": "la la"}"#
            let calls = (0..<20).map { _ in
                Task { try await gateway.send("/v1/music_generation", body: body, key: key, headers: ["x-mock-duration-ms": "0"]) }
            }
            try await gateway.eventually("20 music calls run upstream") { gateway.control.callsInFlight == 20 }
            let refused = try await gateway.send("/v1/music_generation", body: body, key: key)
            #expect(refused.status == 429)
            #expect(refused.miniMaxCode == 1002)
            #expect((refused.json["error"] as? [String: Any])?["reason"] as? String == "concurrency")
            #expect(refused.header("RateLimit")?.contains(#""concurrency";r=0"#) == true)
            #expect(gateway.control.requestCount == 20)
            gateway.control.release()
            for call in calls { #expect(try await call.value.status == 200) }
            #expect(try await gateway.used("acme", rule: "music", dimension: "concurrency") == 0)
            #expect(try await gateway.send("/v1/music_generation", body: body, key: key, headers: ["x-mock-duration-ms": "0"]).status == 200)
        }
    }

    static let budgetConfig = GatewayHarness.chatConfig(requests: 100_000, tokens: 1_000_000)

    @Test("50 concurrent streams against a 1,000,000 TPM budget never let more than the budget through")
    func noOverAdmission() async throws {
        try await GatewayHarness.run(config: Self.budgetConfig) { gateway in
            let key = try await gateway.key(for: "acme")
            gateway.control.hold()
            // Honest estimates: 11 input + 40,000 asked >= what the mock reports (4 + 400).
            let body = #"{"model": "MiniMax-M2", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 40000}"#
            let answered = Locked(0)
            let calls = (0..<50).map { _ in
                Task {
                    let answer = try await gateway.send(
                        "/v1/chat/completions", body: body, key: key,
                        headers: ["x-mock-completion-tokens": "400", "x-mock-hold-after-events": "1"])
                    answered.value.withLock { $0 += 1 }
                    gateway.signal.ping()
                    return answer
                }
            }
            // While the admitted calls are held upstream, every other call is decided
            // (refused); only then are the admitted ones let go.
            try await gateway.eventually("every call is admitted or refused") {
                gateway.control.callsInFlight + answered.value.withLock { $0 } == 50
            }
            #expect(gateway.control.callsInFlight == 24)
            gateway.control.release()
            var admitted = 0
            var refused = 0
            var reported = 0
            for call in calls {
                let answer = try await call.value
                if answer.status == 200 {
                    admitted += 1
                    let usage = GatewayHarness.events(answer.body).compactMap { event -> Int? in
                        let object = (try? JSONSerialization.jsonObject(with: Data(event.utf8))) as? [String: Any]
                        return ((object?["usage"] as? [String: Any])?["total_tokens"] as? NSNumber)?.intValue
                    }
                    reported += usage.last ?? 0
                } else {
                    #expect(answer.status == 429)
                    let error = try #require(answer.json["error"] as? [String: Any])
                    #expect(error["code"] as? String == "rate_limit_exceeded")
                    #expect(error["type"] as? String == "tokens")
                    refused += 1
                }
            }
            #expect(admitted == 24)
            #expect(refused == 26)
            #expect(admitted * 40_011 <= 1_000_000)
            #expect(gateway.control.requestCount == admitted)
            let used = try #require(try await gateway.used("acme", rule: "chat", dimension: "tokens"))
            #expect(used == reported)
            #expect(used <= 1_000_000)
        }
    }
}

extension GatewayHarness {
    /// A port nothing listens on (bound, read, closed).
    static func freePort() throws -> Int {
        let socket = try ServerSocketProbe()
        return socket.port
    }
}

/// Binds a TCP socket on 127.0.0.1 port 0, reads the port, closes it.
struct ServerSocketProbe {
    let port: Int
    init() throws {
        let fd = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw TestFailure("bind() failed") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw TestFailure("getsockname() failed") }
        port = Int(UInt16(bigEndian: address.sin_port))
    }
}
