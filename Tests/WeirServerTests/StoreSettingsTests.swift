import Testing
@testable import WeirServer

@Suite("--store values")
struct StoreSettingsTests {
    @Test("memory and redis URLs parse; the defaults are port 6379, database 0")
    func valid() throws {
        guard case .memory = try StoreSettings.parse("memory") else { Issue.record("memory"); return }
        for (text, host, port, database, tls) in [
            ("redis://127.0.0.1", "127.0.0.1", 6379, 0, false), ("redis://localhost:7000", "localhost", 7000, 0, false),
            ("redis://10.0.0.5:6380/3", "10.0.0.5", 6380, 3, false), ("redis://[::1]:6390/1", "::1", 6390, 1, false),
            ("rediss://:s3cret@cache.internal:6380", "cache.internal", 6380, 0, true),
        ] {
            guard case .redis(let redis) = try StoreSettings.parse(text) else { Issue.record("\(text)"); continue }
            #expect(redis.client.host == host && redis.client.port == port && redis.client.database == database, "\(text)")
            #expect((redis.client.tls != nil) == tls, "\(text)")
            #expect(!redis.url.contains("s3cret"), "the URL for logs has no credentials")
        }
    }

    @Test("bad values are refused, saying what is wrong and never repeating a password", arguments: [
        ("postgres://x", "expected memory or redis://host:port[/db]"),
        ("redis://user:s3cret@x:port", "the port must be a number"),
        ("redis://:s3cret@x:70000", "port 70000 is not within 1-65535"),
        ("redis://x:6379/db", "the database must be a number"),
        ("redis://:6379", "no host"),
        ("redis://[::1", "unclosed [ in the host"),
    ])
    func invalid(text: String, message: String) {
        #expect {
            _ = try StoreSettings.parse(text)
        } throws: { error in
            let description = (error as? StoreSettingsError)?.description ?? ""
            return description.hasPrefix("--store ") && description.contains(message) && !description.contains("s3cret")
        }
    }
}
