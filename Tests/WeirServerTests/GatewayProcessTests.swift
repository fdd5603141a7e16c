import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing

/// `weir serve --upstream` and `weir mock-upstream` as real processes.
@Suite("Gateway mode as processes", .serialized, .timeLimit(.minutes(2)))
struct GatewayProcessTests {
    @Test("weir mock-upstream behind weir serve --upstream --upstream-key-file: a call goes through with the upstream's key")
    func processes() async throws {
        let directory = scratchDirectory()
        try "mock-secret\n".write(toFile: directory + "/upstream-key", atomically: true, encoding: .utf8)
        try "s3cret-admin\n".write(toFile: directory + "/admin-token", atomically: true, encoding: .utf8)
        let mock = try ServerProcess(arguments: [
            "mock-upstream", "--port", "0", "--api-key-file", directory + "/upstream-key", "--music-ms", "10",
        ])
        let mockPort = try await mock.port()
        #expect(mock.output.contains("development stand-in"))
        let server = try ServerProcess(arguments: [
            "serve", "--port", "0", "--data", directory + "/registry", "--admin-token-file", directory + "/admin-token",
            "--upstream", "http://127.0.0.1:\(mockPort)", "--upstream-key-file", directory + "/upstream-key",
            "--upstream-timeout", "30s",
        ])
        let client = HTTPTestClient(port: try await server.port(), adminToken: "s3cret-admin")
        #expect(server.output.contains("gateway to http://127.0.0.1:\(mockPort)"))
        #expect(try await client.send(.PUT, "/admin/v1/accounts/acme", "{}").status == 201)
        let key = try #require(try await client.send(.POST, "/admin/v1/accounts/acme/keys").json["api_key"] as? String)

        var request = HTTPClientRequest(url: "http://127.0.0.1:\(client.port)/v1/music_generation")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(key)")
        request.body = .bytes(ByteBuffer(string: #"{"model": "Music-2.0", "prompt": "calm piano", "lyrics": "la"}"#))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let body = String(buffer: try await response.body.collect(upTo: 1 << 20))
        #expect(response.status == .ok, "\(body)")
        #expect(body.contains(#""status_code":0"#))
        #expect(response.headers.first(name: "x-ratelimit-limit-requests") == "120")
        #expect(response.headers.first(name: "RateLimit-Policy")?.contains("concurrent-requests") == true)

        // Without a key: 401 from the gateway itself, MiniMax code 1004.
        var anonymous = HTTPClientRequest(url: "http://127.0.0.1:\(client.port)/v1/music_generation")
        anonymous.method = .POST
        anonymous.body = .bytes(ByteBuffer(string: "{}"))
        let refused = try await HTTPClient.shared.execute(anonymous, timeout: .seconds(30))
        #expect(refused.status == .unauthorized)
        #expect(String(buffer: try await refused.body.collect(upTo: 1 << 20)).contains(#""status_code":1004"#))

        server.signal(SIGTERM)
        #expect(await server.exitStatus() == 0)
        mock.signal(SIGTERM)
        #expect(await mock.exitStatus() == 0)
        #expect(!server.output.contains(key))
    }

    @Test("a bad --upstream stops start-up with a message")
    func badUpstream() async throws {
        let directory = scratchDirectory()
        let server = try ServerProcess(arguments: ["serve", "--port", "0", "--data", directory, "--upstream", "ftp://example"])
        #expect(await server.exitStatus() != 0)
        #expect(await Self.output(of: server, contains: "scheme must be http or https"))
        let timeout = try ServerProcess(arguments: [
            "serve", "--port", "0", "--data", directory, "--upstream", "http://127.0.0.1:1", "--upstream-timeout", "soon",
        ])
        #expect(await timeout.exitStatus() != 0)
        #expect(await Self.output(of: timeout, contains: "--upstream-timeout soon"))
    }

    /// Whether the output of an exited process shows `text` (all of it: `waitForOutput`
    /// reads the pipe to its end).
    static func output(of process: ServerProcess, contains text: String) async -> Bool {
        (try? await process.waitForOutput(text)) != nil
    }
}
