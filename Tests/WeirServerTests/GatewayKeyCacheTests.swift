import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import WeirServer

/// What the gateway's per-call savings must not change: an API key whose hash is cached
/// (`APIKeyHashCache`) is still checked against the registry on every call, and an
/// upstream request whose flushes are held (`RequestFlushCoalescer`) still leaves whole.
@Suite("Gateway keys and upstream writes", .serialized, .timeLimit(.minutes(2)))
struct GatewayKeyCacheTests {
    static let chat = GatewayTests.chat

    /// Free accounts get one call a minute, paid ones (a recharge of 10) a thousand.
    static let tieredConfig = """
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
              free: {requests: 1, tokens: 1000000}
              paid: {requests: 1000, tokens: 1000000}
        """

    static let admin = ["Authorization": "Bearer test-admin-token"]

    @Test("a key revoked after it was used (its hash cached) is refused at the very next call")
    func revokedKeyRefusedAtOnce() async throws {
        try await GatewayHarness.run { gateway in
            let created = try await gateway.send("/admin/v1/accounts/acme", method: .PUT, body: "{}", headers: Self.admin)
            #expect(created.status == 201)
            let made = try await gateway.send("/admin/v1/accounts/acme/keys", headers: Self.admin)
            let key = try #require(made.json["api_key"] as? String)
            let prefix = try #require(made.json["prefix"] as? String)
            for _ in 0..<3 {
                let answer = try await gateway.send("/v1/text/chatcompletion_v2", body: Self.chat, key: key)
                #expect(answer.status == 200)
            }
            let revoked = try await gateway.send("/admin/v1/keys/\(prefix)", method: .DELETE, headers: Self.admin)
            #expect(revoked.status == 200)
            // Non-streaming (the event-loop path) and streaming (the Hummingbird route).
            let refused = try await gateway.send("/v1/text/chatcompletion_v2", body: Self.chat, key: key)
            #expect(refused.status == 401)
            let streaming = #"{"model": "MiniMax-M2", "stream": true, "messages": [{"role": "user", "content": "hi"}]}"#
            let refusedStream = try await gateway.send("/v1/text/chatcompletion_v2", body: streaming, key: key)
            #expect(refusedStream.status == 401)
            // A key made afterwards works at once.
            let again = try await gateway.send("/admin/v1/accounts/acme/keys", headers: Self.admin)
            let newKey = try #require(again.json["api_key"] as? String)
            let answer = try await gateway.send("/v1/text/chatcompletion_v2", body: Self.chat, key: newKey)
            #expect(answer.status == 200)
        }
    }

    @Test("a recharge counts at the very next call of a key already used (its hash cached)")
    func rechargeCountsAtOnce() async throws {
        try await GatewayHarness.run(config: Self.tieredConfig) { gateway in
            let key = try await gateway.key(for: "acme")
            let first = try await gateway.send("/v1/chat/completions", body: Self.chat, key: key)
            #expect(first.status == 200)
            #expect(first.header("x-ratelimit-limit-requests") == "1")
            let refused = try await gateway.send("/v1/chat/completions", body: Self.chat, key: key)
            #expect(refused.status == 429)
            let recharged = try await gateway.send(
                "/admin/v1/accounts/acme/recharges", body: #"{"amount": 10}"#, headers: Self.admin)
            #expect(recharged.status == 200)
            let paid = try await gateway.send("/v1/chat/completions", body: Self.chat, key: key)
            #expect(paid.status == 200)
            #expect(paid.header("x-ratelimit-limit-requests") == "1000")
        }
    }

    @Test("the key hash cache: hits only for the same bytes, bounded, emptied when full")
    func hashCache() {
        let cache = APIKeyHashCache(capacity: 3)
        #expect(cache.hash(of: "weir_a") == nil)
        cache.store(APIKeys.hash("weir_a"), of: "weir_a")
        #expect(cache.hash(of: "weir_a") == APIKeys.hash("weir_a"))
        #expect(cache.hash(of: "weir_A") == nil)
        #expect(cache.hash(of: "weir_a ") == nil)
        #expect(cache.hash(of: "weir_") == nil)
        // Canonically equivalent but different bytes: a different key.
        cache.store(APIKeys.hash("caf\u{E9}"), of: "caf\u{E9}")
        #expect(cache.hash(of: "cafe\u{301}") == nil)
        #expect(cache.hash(of: "caf\u{E9}") == APIKeys.hash("caf\u{E9}"))
        cache.store(APIKeys.hash("weir_b"), of: "weir_b")
        #expect(cache.count == 3)
        // Storing a key already there does not empty it.
        cache.store(APIKeys.hash("weir_b"), of: "weir_b")
        #expect(cache.count == 3)
        cache.store(APIKeys.hash("weir_c"), of: "weir_c")
        #expect(cache.count == 1)
        #expect(cache.hash(of: "weir_c") == APIKeys.hash("weir_c"))
        #expect(cache.hash(of: "weir_a") == nil)
    }

    @Test("the Bearer token: ASCII tokens (trimmed byte by byte) and others (trimmed by Unicode scalar) alike")
    func bearerTokenTrimming() {
        #expect(Gateway.bearerToken("Bearer \tsk-1\t") == "sk-1")
        #expect(Gateway.bearerToken("Bearer sk-1 \t sk-2 ") == "sk-1 \t sk-2")
        #expect(Gateway.bearerToken("Bearer \t \t") == nil)
        #expect(Gateway.bearerToken("Bearer \tsk-\u{00E9}\t") == "sk-\u{00E9}")
        #expect(Gateway.bearerToken("Bearer sk-1\u{2003}") == "sk-1")
        #expect(Gateway.bearerToken("Bearer sk-1\u{00AD}") == "sk-1\u{00AD}")
        #expect(Gateway.bearerToken("Bearer sk-1\r") == "sk-1\r")
    }

    @Test("constant-time comparison: equal bytes only, whatever the lengths")
    func constantTimeEquals() {
        #expect(ConstantTime.equals("weir_abc", "weir_abc"))
        #expect(!ConstantTime.equals("weir_abc", "weir_abd"))
        #expect(!ConstantTime.equals("weir_abc", "weir_ab"))
        #expect(!ConstantTime.equals("", "a"))
        #expect(ConstantTime.equals("", ""))
        #expect(!ConstantTime.equals("caf\u{E9}", "cafe\u{301}"))
        let long = String(repeating: "k", count: 200)
        #expect(ConstantTime.equals(long, String(repeating: "k", count: 200)))
        #expect(!ConstantTime.equals(long, String(repeating: "k", count: 199) + "j"))
        #expect(ConstantTime.equals([1, 2, 3], [1, 2, 3]))
        #expect(!ConstantTime.equals([1, 2, 3], [1, 2]))
    }

    // `writeAndFlush(_:promise:)` rather than `writeOutbound`, which would wait for
    // the write's promise: held flushes leave it pending by design.
    @Test("an upstream request's head is held until its end is written, then head and body leave in one flush")
    func coalescedRequestWrites() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([HTTPRequestEncoder(), RequestFlushCoalescer()])
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/chat/completions")
        head.headers.add(name: "Content-Length", value: "2")
        channel.writeAndFlush(HTTPClientRequestPart.head(head), promise: nil)
        // Written and flushed, but held: nothing has reached the socket.
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        channel.writeAndFlush(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: "{}"))), promise: nil)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        var sent = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { sent += String(buffer: buffer) }
        #expect(sent.hasPrefix("POST /v1/chat/completions HTTP/1.1\r\n"))
        #expect(sent.hasSuffix("\r\n\r\n{}"))
        #expect(try channel.finish().isClean)
    }

    @Test("a held flush goes out at the end of the event loop's turn when the rest of the request is late")
    func heldFlushNotHeldPastTheTurn() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([HTTPRequestEncoder(), RequestFlushCoalescer()])
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/upload")
        head.headers.add(name: "Transfer-Encoding", value: "chunked")
        channel.writeAndFlush(HTTPClientRequestPart.head(head), promise: nil)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        channel.embeddedEventLoop.run()  // the end of the turn
        let sentHead = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(String(buffer: sentHead).hasPrefix("POST /upload HTTP/1.1\r\n"))
        // A body part flushed later leaves by the end of its own turn as well.
        channel.writeAndFlush(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: "part"))), promise: nil)
        channel.embeddedEventLoop.run()
        var sent = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { sent += String(buffer: buffer) }
        #expect(sent == "4\r\npart\r\n")
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let end = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(String(buffer: end) == "0\r\n\r\n")
        // A request without a body: its head leaves with its end.
        let get = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/healthz")
        channel.writeAndFlush(HTTPClientRequestPart.head(get), promise: nil)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let sentGet = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(String(buffer: sentGet).hasPrefix("GET /healthz HTTP/1.1\r\n"))
        #expect(try channel.finish().isClean)
    }
}
