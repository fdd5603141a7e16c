import NIOSSL

extension RedisClient.Configuration {
    /// A configuration from a Redis URL: `redis://[[user]:password@]host[:port][/db]`,
    /// or `rediss://` for TLS (the system's trust roots, full verification). The port
    /// defaults to 6379 and the database to 0; an IPv6 address goes in brackets; user and
    /// password are percent-decoded. Timeouts, pool size and backoff keep their defaults
    /// (set them on the result).
    ///
    /// - Throws: `RedisURLError` naming what is wrong.
    public init(url: String) throws {
        var rest = Substring(url)
        guard let separator = rest.firstRange(of: "://") else {
            throw RedisURLError("\(url): not a Redis URL (redis://host:port/db or rediss://...)")
        }
        let scheme = rest[..<separator.lowerBound].lowercased()
        guard scheme == "redis" || scheme == "rediss" else {
            throw RedisURLError("\(url): scheme \(scheme) is neither redis nor rediss")
        }
        rest = rest[separator.upperBound...]
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !path.isEmpty {
                guard let number = Int(path), number >= 0 else {
                    throw RedisURLError("\(url): the database must be a number from 0, not \(path)")
                }
                database = number
            }
        }
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                let user = credentials[..<colon]
                username = user.isEmpty ? nil : try Self.decode(user, in: url)
                password = try Self.decode(credentials[credentials.index(after: colon)...], in: url)
            } else {
                password = try Self.decode(credentials, in: url)
            }
        }
        var host = rest
        var port = 6379
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw RedisURLError("\(url): unclosed [ in the host") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let number = Int(after.dropFirst()) else {
                    throw RedisURLError("\(url): expected :port after the address, got \(after)")
                }
                port = number
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            guard let number = Int(rest[rest.index(after: colon)...]) else {
                throw RedisURLError("\(url): the port must be a number, not \(rest[rest.index(after: colon)...])")
            }
            port = number
        }
        guard !host.isEmpty else { throw RedisURLError("\(url): no host") }
        guard (1...65_535).contains(port) else { throw RedisURLError("\(url): port \(port) is not within 1-65535") }
        self.init(
            host: String(host), port: port, database: database,
            tls: scheme == "rediss" ? .makeClientConfiguration() : nil, password: password, username: username)
    }

    private static func decode(_ text: Substring, in url: String) throws -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next(), let low = iterator.next(),
                  let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            else { throw RedisURLError("\(url): bad percent-escape in the credentials") }
            bytes.append(value)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A Redis URL that cannot be used, with what is wrong in it.
public struct RedisURLError: Error, CustomStringConvertible, Sendable {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}
