/// Weir's Lua code in Redis: the function library `Lua/weir.lua` (its header documents the
/// keys, arguments, replies, arithmetic and expiry), compiled into the binary and loaded
/// with `FUNCTION LOAD REPLACE` (Redis 7).
///
/// **Versioned names.** The library and its functions are named with a digest of the
/// source (`weir_<digest>`, `weir_acquire_<digest>`, ...), so instances of different Weir
/// versions sharing one Redis (a rolling upgrade) each call their own code, and loading
/// the same version again replaces it with itself. A library left by an older version
/// stays loaded, unused, until `FUNCTION DELETE` or `FUNCTION FLUSH`.
///
/// Concurrency: immutable values, safe from any thread.
enum RedisLibrary {
    /// The source as written, with `{{version}}` where the digest goes.
    static let template = String(decoding: PackageResources.weir_lua, as: UTF8.self)

    /// 16 hex digits of the template's FNV-1a 64-bit hash.
    static let version: String = {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in template.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        let digits = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }()

    /// The library's source, as `FUNCTION LOAD` takes it.
    static let source = template.replacing("{{version}}", with: version)

    /// The library's functions.
    enum Function: CaseIterable {
        case acquire, settle, status

        /// The name `FCALL` takes: `weir_acquire_<version>` and so on.
        var name: String { "weir_\(self)_" + RedisLibrary.version }
    }

    /// Whether `reply` says the server does not have the function (a new or restarted
    /// server, `FUNCTION FLUSH`, a node added to a cluster): the library is then loaded
    /// and the call made again.
    static func isMissing(_ reply: RESPValue) -> Bool {
        reply.errorMessage?.hasPrefix("ERR Function not found") ?? false
    }
}
