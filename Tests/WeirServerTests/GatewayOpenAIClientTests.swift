import Foundation
import Testing
import WeirCore
import WeirRedisTesting

/// The official `openai` Python package (installed by `scripts/install-deps --tests`)
/// against the gateway's OpenAI-compatible path, streaming and not, limited and not.
@Suite("Gateway mode with the official OpenAI client", .serialized, .timeLimit(.minutes(2)))
struct GatewayOpenAIClientTests {
    static let config = GatewayHarness.chatConfig(requests: 4, tokens: 1_000_000)

    /// Four calls (plain, raw, streamed, streamed with usage), then a fifth that the
    /// limit of 4 requests per minute refuses. Prints what the client saw, as JSON.
    static let script = """
        import json, sys
        import openai

        port, key = sys.argv[1], sys.argv[2]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=30)
        messages = [{"role": "user", "content": "hello there"}]
        mock = {"x-mock-completion-tokens": "10"}
        out = {}

        plain = client.chat.completions.create(model="MiniMax-M2", messages=messages, max_tokens=100, extra_headers=mock)
        out["plain"] = {"content": plain.choices[0].message.content, "total_tokens": plain.usage.total_tokens}

        raw = client.chat.completions.with_raw_response.create(model="MiniMax-M2", messages=messages, max_tokens=100, extra_headers=mock)
        out["raw"] = {name: raw.headers.get(name) for name in [
            "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
            "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "ratelimit-policy", "ratelimit"]}
        out["raw"]["total_tokens"] = raw.parse().usage.total_tokens

        chunks = list(client.chat.completions.create(model="MiniMax-M2", messages=messages, max_tokens=100, stream=True, extra_headers=mock))
        out["stream"] = {
            "chunks": len(chunks),
            "usage_chunks": sum(1 for chunk in chunks if chunk.usage is not None),
            "content": "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices),
        }

        chunks = list(client.chat.completions.create(
            model="MiniMax-M2", messages=messages, max_tokens=100, stream=True,
            stream_options={"include_usage": True}, extra_headers=mock))
        usage = [chunk.usage.total_tokens for chunk in chunks if chunk.usage is not None]
        out["stream_usage"] = {"chunks": len(chunks), "usage": usage}

        try:
            client.chat.completions.create(model="MiniMax-M2", messages=messages, max_tokens=100, extra_headers=mock)
            out["limited"] = None
        except openai.RateLimitError as error:
            out["limited"] = {
                "status": error.status_code, "code": error.code, "type": error.type, "message": error.message,
                "retry_after": error.response.headers.get("retry-after"),
                "remaining": error.response.headers.get("x-ratelimit-remaining-requests"),
                "ratelimit": error.response.headers.get("ratelimit"),
            }
        print(json.dumps(out))
        """

    @Test("chat completions, streamed and not, usage settled, and a RateLimitError with the headers")
    func officialClient() async throws {
        try await GatewayHarness.run(config: Self.config) { gateway in
            let key = try await gateway.key(for: "acme")
            let scriptPath = scratchDirectory() + "/openai_client.py"
            try Self.script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
            let output = try await Python.run([scriptPath, String(gateway.port), key])
            let seen = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])

            let plain = try #require(seen["plain"] as? [String: Any])
            #expect(plain["content"] as? String == String(repeating: "tok ", count: 10))
            #expect((plain["total_tokens"] as? NSNumber)?.intValue == 14)

            let raw = try #require(seen["raw"] as? [String: Any])
            #expect(raw["x-ratelimit-limit-requests"] as? String == "4")
            #expect(raw["x-ratelimit-remaining-requests"] as? String == "2")
            #expect(raw["x-ratelimit-limit-tokens"] as? String == "1000000")
            #expect(raw["ratelimit-policy"] as? String == #""requests";q=4;w=60, "tokens";q=1000000;w=60;qu="tokens""#)

            // The gateway asked the upstream for usage and kept the usage chunk from the client.
            let stream = try #require(seen["stream"] as? [String: Any])
            #expect((stream["usage_chunks"] as? NSNumber)?.intValue == 0)
            #expect(stream["content"] as? String == String(repeating: "tok ", count: 10))
            let streamed = gateway.control.requestsReceived[2]
            let forwarded = try #require(try JSONSerialization.jsonObject(with: Data(streamed.body)) as? [String: Any])
            #expect((forwarded["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true)

            // A client that asks for usage gets the chunk.
            let withUsage = try #require(seen["stream_usage"] as? [String: Any])
            #expect((withUsage["usage"] as? [NSNumber])?.map(\.intValue) == [14])

            // 4 calls settled at 14 tokens each.
            #expect(try await gateway.used("acme", rule: "chat", dimension: "tokens") == 56)

            let limited = try #require(seen["limited"] as? [String: Any])
            #expect((limited["status"] as? NSNumber)?.intValue == 429)
            #expect(limited["code"] as? String == "rate_limit_exceeded")
            #expect(limited["type"] as? String == "requests")
            #expect((limited["message"] as? String)?.contains("4 requests per 1m0s") == true)
            #expect(limited["retry_after"] as? String == "60")
            #expect(limited["remaining"] as? String == "0")
            #expect((limited["ratelimit"] as? String)?.contains(#""requests";r=0;t=60"#) == true)
            #expect(gateway.control.requestCount == 4)
        }
    }
}

/// `python3` from PATH, run to its end; its standard output.
enum Python {
    static func run(_ arguments: [String]) async throws -> String {
        let run = try await ChildProcess.run("/usr/bin/env", ["python3"] + arguments)
        guard run.status == 0 else {
            throw TestFailure("python3 exited \(run.status) (is the openai package installed? scripts/install-deps --tests installs it):\n\(run.error)")
        }
        return run.output
    }
}
