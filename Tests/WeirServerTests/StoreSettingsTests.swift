import Testing
@testable import WeirServer

@Suite("--store values")
struct StoreSettingsTests {
    @Test("memory and redis URLs parse; the defaults are port 6379, database 0")
    func valid() throws {
        guard case .memory = try StoreSettings.parse("memory") else { Issue.record("memory"); return }
        for (text, host, port, database) in [
            ("redis://127.0.0.1", "127.0.0.1", 6379, 0), ("redis://localhost:7000", "localhost", 7000, 0),
            ("redis://10.0.0.5:6380/3", "10.0.0.5", 6380, 3), ("redis://[::1]:6390/1", "::1", 6390, 1),
            ("redis://cache/", "cache", 6379, 0),
        ] {
            guard case .redis(let redis) = try StoreSettings.parse(text) else { Issue.record("\(text)"); continue }
            #expect(redis.host == host && redis.port == port && redis.database == database, "\(text)")
        }
    }

    @Test("bad values are refused, saying what is wrong", arguments: [
        ("postgres://x", "expected memory or redis://host:port[/db]"),
        ("rediss://x:6379", "TLS (rediss://) is not supported"),
        ("redis://user:secret@x:6379", "credentials in the URL are not supported"),
        ("redis://x:port", "the port must be a number, got port"),
        ("redis://x:70000", "port 70000 is out of range"),
        ("redis://x:6379/16", "the database must be a number from 0 to 15, got 16"),
        ("redis://:6379", "the host is missing"),
        ("redis://[::1", "unclosed [ in the host"),
    ])
    func invalid(text: String, message: String) {
        #expect {
            _ = try StoreSettings.parse(text)
        } throws: { error in
            let description = (error as? StoreSettingsError)?.description ?? ""
            return description.contains(message) && !description.contains("secret")
        }
    }
}
