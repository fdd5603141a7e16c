import Crypto

/// API keys: how they are made, named and hashed.
///
/// A key reads `weir_<prefix id>_<secret>`: 8 and 40 characters of base62 drawn from
/// the system's CSPRNG (`SystemRandomNumberGenerator`: `getrandom(2)` on Linux), about
/// 286 bits in all. `weir_<prefix id>` is the key's public prefix: it names the key for
/// revocation and in listings. Only the prefix and the key's SHA-256 are stored; the
/// key itself is shown once, when made, and never logged.
enum APIKeys {
    private static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// A new key and its prefix.
    static func generate() -> (key: String, prefix: String) {
        var generator = SystemRandomNumberGenerator()
        let prefix = "weir_" + randomCharacters(8, using: &generator)
        let key = prefix + "_" + randomCharacters(40, using: &generator)
        return (key, prefix)
    }

    /// SHA-256 of the key's UTF-8 bytes, as 64 lowercase hexadecimal characters.
    static func hash(_ key: String) -> String {
        let digest = SHA256.hash(data: Array(key.utf8))
        var text = ""
        text.reserveCapacity(64)
        let hexDigits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(64)
        for byte in digest {
            bytes.append(hexDigits[Int(byte >> 4)])
            bytes.append(hexDigits[Int(byte & 0x0F)])
        }
        text = String(decoding: bytes, as: UTF8.self)
        return text
    }

    /// Uniform characters of the alphabet (rejection sampling: no modulo bias).
    private static func randomCharacters(_ count: Int, using generator: inout SystemRandomNumberGenerator) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        while bytes.count < count {
            let value = UInt8.random(in: 0...255, using: &generator)
            guard value < 248 else { continue }  // 248 = 4 * 62
            bytes.append(alphabet[Int(value % 62)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
