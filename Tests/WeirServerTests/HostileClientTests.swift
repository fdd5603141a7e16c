import Foundation
import Synchronization
import WeirRedisTesting
import Hummingbird
import HummingbirdTesting
import Testing
import WeirCore
import WeirEnvoy
import WeirServer

#if canImport(Glibc)
import Glibc
#endif

/// Clients that hold the HTTP port without using it, over real sockets: idle and slow
/// ones are cut off, connections beyond the limit refused, oversized heads refused, and
/// meanwhile `weir serve` answers everyone else. The limits are made small so that each
/// case ends in a fraction of a second; the tests wait on the server's own close or
/// answer, never on a sleep.
@Suite("Hostile clients on the HTTP port")
struct HostileClientTests {
    static let acquire = #"{"account":"h","api":"text","model":"MiniMax-M2"}"#
    static let acquireRequest =
        "POST /v1/acquire HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: \(acquire.utf8.count)\r\n\r\n\(acquire)"

    static func withServer(
        _ limits: ConnectionLimits, _ body: @Sendable (Int) async throws -> Void
    ) async throws {
        var configuration = testConfiguration()
        configuration.connectionLimits = limits
        let app = try await buildApplication(configuration: configuration)
        try await app.test(.live) { client in try await body(try #require(client.port)) }
    }

    /// Another client's decision, answered while the hostile ones hold their connections.
    static func othersAreAnswered(port: Int) async throws {
        let text = try await RawHTTP.exchange(port: port, request: acquireRequest)
        #expect(text.hasPrefix("HTTP/1.1 200 OK"), "\(text.prefix(200))")
    }

    @Test("an idle connection is closed after the idle timeout; one with a request in flight is not")
    func idleConnections() async throws {
        try await Self.withServer(ConnectionLimits(idleTimeout: 300_000_000)) { port in
            let silent = try RawConnection(port: port)
            let afterAnswer = try RawConnection(port: port)
            // A keep-alive request answered, then silence: idle from the answer on.
            try afterAnswer.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try await Self.othersAreAnswered(port: port)
            let (silentText, silentClosed) = try await silent.readUntilClosed()
            #expect(silentClosed && silentText.isEmpty, "a connection that never sent a byte is closed")
            let (answered, answeredClosed) = try await afterAnswer.readUntilClosed()
            #expect(answeredClosed && answered.hasPrefix("HTTP/1.1 200 OK"), "answered, then closed as idle: \(answered.prefix(80))")
            // The idle timeout does not apply to a request being read or answered: a
            // gateway-free slow decision cannot be made here, so a request that arrives
            // in two parts within the request timeout is answered whole.
            let split = try RawConnection(port: port)
            try split.send("POST /v1/acquire HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: \(Self.acquire.utf8.count)\r\n\r\n")
            try split.send(Self.acquire)
            let (text, _) = try await split.readUntilClosed()
            #expect(text.hasPrefix("HTTP/1.1 200 OK"))
        }
    }

    @Test("a request that trickles in (slowloris) gets 408 and is cut off; others are answered meanwhile")
    func slowRequests() async throws {
        try await Self.withServer(ConnectionLimits(requestReadTimeout: 300_000_000)) { port in
            // Headers that never end, and a body that never comes.
            let slowHead = try RawConnection(port: port)
            try slowHead.send("POST /v1/acquire HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            let slowBody = try RawConnection(port: port)
            try slowBody.send("POST /v1/acquire HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"acc")
            try await Self.othersAreAnswered(port: port)
            for connection in [slowHead, slowBody] {
                let (text, closed) = try await connection.readUntilClosed()
                #expect(closed)
                #expect(text.hasPrefix("HTTP/1.1 408 Request Timeout"), "\(text.prefix(120))")
                #expect(text.contains(#""code":"request_timeout""#))
            }
            try await Self.othersAreAnswered(port: port)
        }
    }

    @Test("connections beyond the limit are closed as they are accepted; a freed place is taken again")
    func connectionLimit() async throws {
        try await Self.withServer(ConnectionLimits(maxConnections: 5)) { port in
            // The test framework's own client may hold one of the five.
            var held: [RawConnection] = []
            var refused = false
            while !refused, held.count < 6 {
                let connection = try RawConnection(port: port)
                try? connection.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                let answer = try await connection.readAnswer()
                if answer.hasPrefix("HTTP/1.1 200 OK") {
                    held.append(connection)
                } else {
                    let (text, closed) = try await connection.readUntilClosed()
                    #expect(closed && text.isEmpty && answer.isEmpty, "refused unanswered: \(answer.prefix(80))")
                    refused = true
                }
            }
            #expect(refused, "a connection beyond the limit is refused")
            #expect(held.count == 4 || held.count == 5, "served up to the limit: \(held.count)")
            // While the limit is reached, every new connection is refused.
            let beyond = try await RawHTTP.exchange(port: port, request: Self.acquireRequest)
            #expect(beyond.isEmpty)
            held.removeLast().close()
            // The freed place is free once the server has seen the close.
            var answered = false
            for _ in 0..<200 where !answered {
                answered = try await RawHTTP.exchange(port: port, request: Self.acquireRequest).hasPrefix("HTTP/1.1 200 OK")
            }
            #expect(answered)
            for connection in held { connection.close() }
        }
    }

    @Test("too many header fields, or too many header bytes: 431 and closed; a head over 80 KiB: refused and closed")
    func oversizedHeads() async throws {
        try await Self.withServer(ConnectionLimits(maxHeaderCount: 20, maxHeaderBytes: 2_048)) { port in
            let many = (0..<30).map { "X-Field-\($0): \($0)\r\n" }.joined()
            let manyText = try await RawHTTP.exchange(port: port, request: "GET /healthz HTTP/1.1\r\nHost: x\r\n\(many)\r\n")
            #expect(manyText.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large"), "\(manyText.prefix(120))")
            #expect(manyText.contains(#""code":"headers_too_large""#))
            let long = "Cookie: " + String(repeating: "c", count: 3_000) + "\r\n"
            let longText = try await RawHTTP.exchange(
                port: port, request: "POST /v1/acquire HTTP/1.1\r\nHost: x\r\n\(long)Content-Length: 2\r\n\r\n{}")
            #expect(longText.hasPrefix("HTTP/1.1 431"), "\(longText.prefix(120))")
            let huge = "Cookie: " + String(repeating: "c", count: 100 << 10) + "\r\n"
            let hugeText = try await RawHTTP.exchange(port: port, request: "GET /healthz HTTP/1.1\r\nHost: x\r\n\(huge)\r\n")
            #expect(hugeText.isEmpty || hugeText.hasPrefix("HTTP/1.1 431") || hugeText.hasPrefix("HTTP/1.1 400"), "\(hugeText.prefix(120))")
            try await Self.othersAreAnswered(port: port)
        }
    }
}

extension HostileClientTests {
    @Test("the gRPC port cuts a client whose frame trickles in (slowloris); others are served")
    func slowGRPCConnection() async throws {
        let port = Mutex<Int?>(nil)
        let signal = EventSignal()
        var configuration = testConfiguration()
        configuration.envoy = EnvoyServiceConfiguration(port: 0, onListening: { bound in
            port.withLock { $0 = bound }
            signal.ping()
        })
        configuration.connectionLimits.requestReadTimeout = 300_000_000
        let app = try await buildApplication(configuration: configuration)
        try await app.test(.live) { client in
            try await signal.wait(until: { port.withLock { $0 } != nil })
            let grpcPort = try #require(port.withLock { $0 })
            let slow = try RawConnection(port: grpcPort)
            // The preface, an empty SETTINGS frame, then a HEADERS frame that announces
            // 100 bytes and sends 3: the frame never completes.
            try slow.send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\u{0}\u{0}\u{0}\u{4}\u{0}\u{0}\u{0}\u{0}\u{0}")
            try slow.send("\u{0}\u{0}\u{64}\u{1}\u{4}\u{0}\u{0}\u{0}\u{1}abc")
            try await Self.othersAreAnswered(port: try #require(client.port))
            let (_, closed) = try await slow.readUntilClosed()
            #expect(closed, "closed by the server, not by the test's receive timeout")
        }
    }

    @Test("the gRPC port closes a connection with no RPC open after the idle timeout; others are served")
    func idleGRPCConnection() async throws {
        let port = Mutex<Int?>(nil)
        let signal = EventSignal()
        var configuration = testConfiguration()
        let envoy = EnvoyServiceConfiguration(port: 0, onListening: { bound in
            port.withLock { $0 = bound }
            signal.ping()
        })
        configuration.connectionLimits.idleTimeout = 300_000_000
        configuration.envoy = envoy
        let app = try await buildApplication(configuration: configuration)
        try await app.test(.live) { client in
            try await signal.wait(until: { port.withLock { $0 } != nil })
            let grpcPort = try #require(port.withLock { $0 })
            let idle = try RawConnection(port: grpcPort)
            // The HTTP/2 preface and an empty SETTINGS frame, then silence.
            try idle.send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\u{0}\u{0}\u{0}\u{4}\u{0}\u{0}\u{0}\u{0}\u{0}")
            try await Self.othersAreAnswered(port: try #require(client.port))
            let (_, closed) = try await idle.readUntilClosed()
            #expect(closed, "closed by the server, not by the test's receive timeout")
        }
    }
}

/// One blocking TCP connection to 127.0.0.1, for clients that misbehave: its reads run
/// on a thread of their own, bounded by a 10-second receive timeout.
final class RawConnection: @unchecked Sendable {
    private let socket: Int32
    private var closed = false

    init(port: Int) throws {
        socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw TestFailure("socket() failed") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            Glibc.close(socket)
            throw TestFailure("connect() failed")
        }
    }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw TestFailure("send() failed") }
            sent += count
        }
    }

    /// Everything until the server closes the connection, and whether it did (false when
    /// the receive timed out first).
    func readUntilClosed() async throws -> (String, Bool) {
        try await onThread {
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = recv(self.socket, &buffer, buffer.count, 0)
                if count == 0 { return (String(decoding: received, as: UTF8.self), true) }
                if count < 0 { return (String(decoding: received, as: UTF8.self), errno == ECONNRESET) }
                received += buffer[0..<count]
            }
        }
    }

    /// One answer's bytes: what the first read returns (a small answer comes whole).
    func readAnswer() async throws -> String {
        try await onThread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            let count = recv(self.socket, &buffer, buffer.count, 0)
            return count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : ""
        }
    }

    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(socket)
    }

    deinit { close() }

    private func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async throws -> T {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: body()) }.start()
        }
    }
}
