import Foundation
import Testing
import WeirCore
import WeirPolicy
@testable import WeirServer

@Suite("Gateway parts: SSE parsing, estimates, usage, body rewriting")
struct GatewayPartsTests {
    @Test("events are split however the bytes arrive, with their exact bytes kept")
    func sseSplitting() {
        let stream = "data: {\"a\":1}\n\n: comment\n\ndata: line one\ndata: line two\r\n\r\nevent: x\rdata:no-space\r\rdata: [DONE]\n\n"
        let bytes = Array(stream.utf8)
        var whole = SSEParser()
        let expected = whole.feed(bytes)
        #expect(expected.map { $0.data.map { String(decoding: $0, as: UTF8.self) } } == [
            "{\"a\":1}", nil, "line one\nline two", "no-space", "[DONE]",
        ])
        #expect(expected.flatMap(\.raw) == bytes)
        #expect(whole.pendingBytes.isEmpty)
        // Every split point, byte by byte too: the same events.
        for cut in 0...bytes.count {
            var parser = SSEParser()
            let events = parser.feed(bytes[..<cut]) + parser.feed(bytes[cut...])
            #expect(events == expected, "cut at \(cut)")
        }
        var single = SSEParser()
        var events: [SSEParser.Event] = []
        for byte in bytes { events += single.feed([byte]) }
        #expect(events == expected)
    }

    @Test("an event not yet ended stays pending")
    func ssePending() {
        var parser = SSEParser()
        #expect(parser.feed(Array("data: {\"partial\"".utf8)).isEmpty)
        #expect(parser.pendingBytes == Array("data: {\"partial\"".utf8))
        #expect(parser.feed(Array(":true}\n\n".utf8)).count == 1)
        #expect(parser.pendingBytes.isEmpty)
    }

    static let rule = Rule(name: "chat", api: "text", meter: .tokens, defaultOutputReservation: 4096, limits: [])

    @Test("text estimates: messages, tools and the output asked for (max_completion_tokens first), else the rule's reservation")
    func textEstimates() throws {
        func estimate(_ json: String) throws -> UsageEstimate {
            try UsageEstimate.of(try JSONParser.parse(Array(json.utf8)), metering: .tokens, rule: Self.rule)
        }
        #expect(try estimate(#"{"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 100}"#)
            == UsageEstimate(input: 11, output: 100))
        #expect(try estimate(#"{"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 100, "max_completion_tokens": 7}"#).output == 7)
        #expect(try estimate(#"{"messages": []}"#) == UsageEstimate(input: 3, output: 4096))
        // A CJK character is a token; content parts are counted.
        #expect(try estimate(#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "你好世界"}]}], "max_tokens": 0}"#)
            == UsageEstimate(input: 3 + 4 + 1 + 1 + 4, output: 0))
        #expect(throws: APIError.self) { try estimate(#"{"messages": "hi"}"#) }
        #expect(throws: APIError.self) { try estimate(#"{"messages": [], "max_tokens": 1.5}"#) }
    }

    @Test("speech counts characters; images n (default 1)")
    func otherEstimates() throws {
        let speech = try UsageEstimate.of(try JSONParser.parse(Array(#"{"text": "你好, world"}"#.utf8)), metering: .characters, rule: Self.rule)
        #expect(speech.total == 9)
        let images = try UsageEstimate.of(try JSONParser.parse(Array(#"{"n": 3}"#.utf8)), metering: .images, rule: Self.rule)
        #expect(images.total == 3)
        let one = try UsageEstimate.of(try JSONParser.parse(Array("{}".utf8)), metering: .images, rule: Self.rule)
        #expect(one.total == 1)
        #expect(throws: APIError.self) {
            try UsageEstimate.of(try JSONParser.parse(Array("{}".utf8)), metering: .characters, rule: Self.rule)
        }
    }

    @Test("usage is read from the shapes of each API")
    func reportedUsage() throws {
        func parse(_ json: String) throws -> JSONValue { try JSONParser.parse(Array(json.utf8)) }
        #expect(UsageMeter.reportedUsage(in: try parse(#"{"usage": {"total_tokens": 42}}"#), metering: .tokens) == 42)
        #expect(UsageMeter.reportedUsage(in: try parse(#"{"usage": {"prompt_tokens": 2, "completion_tokens": 3}}"#), metering: .tokens) == 5)
        #expect(UsageMeter.reportedUsage(in: try parse(#"{"usage": null}"#), metering: .tokens) == nil)
        #expect(UsageMeter.reportedUsage(in: try parse(#"{"extra_info": {"usage_characters": 9}}"#), metering: .characters) == 9)
        #expect(UsageMeter.reportedUsage(in: try parse(#"{"metadata": {"success_count": "2"}}"#), metering: .images) == 2)
        var meter = UsageMeter(metering: .tokens, estimate: UsageEstimate(input: 11, output: 100))
        meter.observe(try parse(#"{"choices": [{"delta": {"content": "tok tok "}}]}"#))
        meter.observe(try parse(#"{"choices": [{"delta": {"reasoning_content": "你好"}}]}"#))
        #expect(meter.completedUnits == 11 + 2 + 2)
        meter.observe(try parse(#"{"choices": [], "usage": {"total_tokens": 30}}"#))
        #expect(meter.completedUnits == 30)
    }

    @Test("include_usage is added to stream_options, keeping every other member")
    func includeUsage() throws {
        let body = try JSONParser.parse(Array(#"{"model":"m","stream":true,"stream_options":{"x":1},"n":1.50}"#.utf8))
        let options = try #require(body["stream_options"]?.setting("include_usage", to: .bool(true)))
        let rewritten = try #require(body.setting("stream_options", to: options))
        #expect(String(decoding: rewritten.serialized, as: UTF8.self)
            == #"{"model":"m","stream":true,"stream_options":{"x":1,"include_usage":true},"n":1.50}"#)
        #expect(Gateway.isUsageOnly(try JSONParser.parse(Array(#"{"choices":[],"usage":{"total_tokens":1}}"#.utf8))))
        #expect(!Gateway.isUsageOnly(try JSONParser.parse(Array(#"{"choices":[{}],"usage":{"total_tokens":1}}"#.utf8))))
        #expect(!Gateway.isUsageOnly(try JSONParser.parse(Array(#"{"choices":[],"usage":null}"#.utf8))))
    }

    @Test("upstream addresses are checked")
    func upstreamAddresses() throws {
        #expect(try GatewayConfiguration.upstreamURL("https://api.minimax.io/").absoluteString == "https://api.minimax.io")
        #expect(try GatewayConfiguration.upstreamURL("http://127.0.0.1:9000/prefix").absoluteString == "http://127.0.0.1:9000/prefix")
        #expect(throws: GatewayConfiguration.InvalidUpstream.self) { try GatewayConfiguration.upstreamURL("ftp://x") }
        #expect(throws: GatewayConfiguration.InvalidUpstream.self) { try GatewayConfiguration.upstreamURL("http://") }
        #expect(throws: GatewayConfiguration.InvalidUpstream.self) { try GatewayConfiguration.upstreamURL("http://x/?a=1") }
    }

    @Test("the Bearer token: any case of the scheme, spaces trimmed, anything else is no token")
    func bearerToken() {
        #expect(Gateway.bearerToken("Bearer sk-1") == "sk-1")
        #expect(Gateway.bearerToken("bearer sk-1") == "sk-1")
        #expect(Gateway.bearerToken("BEARER sk-1") == "sk-1")
        #expect(Gateway.bearerToken("  Bearer   sk-1 \t ") == "sk-1")
        #expect(Gateway.bearerToken("Bearer \u{3000}sk-\u{00E9}\u{00A0}") == "sk-\u{00E9}")
        #expect(Gateway.bearerToken("Bearer a b") == "a b")
        #expect(Gateway.bearerToken("Bearer") == nil)
        #expect(Gateway.bearerToken("Bearer   ") == nil)
        #expect(Gateway.bearerToken("Bearer \t") == nil)
        #expect(Gateway.bearerToken("Basic c2stMQ==") == nil)
        #expect(Gateway.bearerToken("Bearerx sk-1") == nil)
        #expect(Gateway.bearerToken("Bearer\tsk-1") == nil)
        #expect(Gateway.bearerToken("") == nil)
    }
}
