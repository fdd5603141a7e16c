import Foundation
import NIOCore
import NIOSSL
import Testing
import WeirCore
@testable import WeirRedis
import WeirRedisTesting

#if canImport(Glibc)
import Glibc
#endif

@Suite("Redis URLs")
struct RedisURLTests {
    @Test("redis:// and rediss:// URLs give host, port, database, credentials and TLS")
    func valid() throws {
        let plain = try RedisClient.Configuration(url: "redis://cache.internal:6380/3")
        #expect(plain.host == "cache.internal" && plain.port == 6380 && plain.database == 3 && plain.tls == nil)
        #expect(plain.password == nil && plain.username == nil)
        let defaults = try RedisClient.Configuration(url: "REDIS://10.0.0.5")
        #expect(defaults.host == "10.0.0.5" && defaults.port == 6379 && defaults.database == 0)
        let secure = try RedisClient.Configuration(url: "rediss://weir:p%40ss%3Aword@[::1]:7000/")
        #expect(secure.host == "::1" && secure.port == 7000 && secure.tls != nil)
        #expect(secure.username == "weir" && secure.password == "p@ss:word")
        let passwordOnly = try RedisClient.Configuration(url: "redis://:secret@localhost")
        #expect(passwordOnly.username == nil && passwordOnly.password == "secret")
    }

    @Test("a bad URL names what is wrong", arguments: [
        ("localhost:6379", "not a Redis URL"),
        ("http://localhost", "scheme http is neither redis nor rediss"),
        ("redis://localhost:port", "the port must be a number, not port"),
        ("redis://localhost:70000", "port 70000 is not within 1-65535"),
        ("redis://localhost/db1", "the database must be a number from 0, not db1"),
        ("redis://:6379", "no host"),
        ("redis://[::1:6379", "unclosed [ in the host"),
        ("redis://a:%zz@host", "bad percent-escape in the credentials"),
    ])
    func invalid(url: String, message: String) {
        #expect {
            _ = try RedisClient.Configuration(url: url)
        } throws: { error in
            (error as? RedisURLError)?.description.contains(message) == true
        }
    }
}

@Suite("RedisClient over TLS, with AUTH, against a real redis-server")
struct RedisClientTLSTests {
    /// A self-signed certificate for 127.0.0.1 and localhost, made by `openssl` in `directory`.
    static func certificate(in directory: URL) throws -> (certificate: String, key: String) {
        let certificate = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        guard let openssl = ["/usr/bin/openssl", "/usr/local/bin/openssl"].first(where: {
            FileManager.default.isExecutableFile(atPath: $0)
        }) else { throw TestSetupError(description: "openssl is not installed (scripts/install-deps --tests)") }
        let run = try ChildProcess.run(openssl, [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", certificate, "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        guard run.status == 0 else { throw TestSetupError(description: "openssl req failed: \(run.error)") }
        return (certificate, key)
    }

    @Test("rediss:// with the server's certificate trusted: commands and the store work; untrusted or wrong password fail")
    func tls() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("weir-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let (certificate, key) = try Self.certificate(in: directory)
        let port = try await RedisServerProcess.freePort()
        // TLS only: the plain port is closed (the last --port wins).
        let server = try RedisServerProcess(port: port, arguments: [
            "--port", "0", "--tls-port", String(port), "--tls-cert-file", certificate, "--tls-key-file", key,
            "--tls-ca-cert-file", certificate, "--tls-auth-clients", "no", "--requirepass", "s3cret",
        ])
        defer { server.stop() }

        var configuration = try RedisClient.Configuration(url: "rediss://:s3cret@127.0.0.1:\(port)/2")
        configuration.commandTimeout = .seconds(5)
        configuration.connectTimeout = .seconds(2)
        configuration.tls?.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(certificate))
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.close() } }
        #expect(try await client.command("PING") == .simpleString("PONG"))
        let info = try #require(try await client.command("CLIENT", "INFO").string)
        #expect(info.contains(" db=2 "), "SELECT 2 after AUTH: \(info)")
        let store = RedisStore(client: client, keyPrefix: "tls:", clock: ManualClock(start: 1_000 * Nanoseconds.perSecond))
        let decision = try await store.acquire(AdmissionRequest(
            key: LimitKey(account: "a", scope: "s"), limits: LimitSet(requests: .perMinute(3))))
        #expect(decision.isAllowed && decision.limits.requests?.remaining == 2)

        // The system's trust roots do not know this certificate: the handshake fails.
        var untrusted = configuration
        untrusted.tls = .makeClientConfiguration()
        let stranger = RedisClient(configuration: untrusted)
        defer { Task { await stranger.close() } }
        await #expect(throws: StoreError.self) { try await stranger.command("PING") }

        var wrong = configuration
        wrong.password = "guess"
        let intruder = RedisClient(configuration: wrong)
        defer { Task { await intruder.close() } }
        do {
            try await intruder.command("PING")
            Issue.record("a wrong password was accepted")
        } catch let error as StoreError {
            #expect(error.message.contains("WRONGPASS") && !error.isTransient, "\(error)")
        }
    }
}
