import Synchronization

/// The SHA-256 (`APIKeys.hash`) of API keys presented recently, so that a key that
/// comes back is not hashed again on every call.
///
/// **What it caches.** Only a key's hash, which never changes: which account owns the
/// hash is still looked up on every call (registry, then the config's key hashes), so a
/// revoked key, a new key, a recharge or a config reload take effect at once exactly
/// as without the cache. Only keys whose hash named an account when they were
/// presented are kept, so requests with made-up keys cannot fill it.
///
/// **Bounded.** At most `capacity` keys; when full, the cache is emptied and fills
/// again with the keys in use.
///
/// **Timing.** A lookup hashes the presented key with the standard library's `Hasher`
/// (SipHash, seeded at random per process, so a caller cannot aim at a stored key's
/// bucket) and compares it with the keys of its bucket in constant time
/// (`ConstantTime.equals`): how long a lookup takes does not tell how much of a stored
/// key a guess got right. The keys themselves stay in memory (as they do while a
/// request is handled); they are never logged or written anywhere.
///
/// Concurrency: thread-safe (one `Mutex`, held for a dictionary lookup or insert).
final class APIKeyHashCache: Sendable {
    /// A presented key, compared in constant time.
    private struct PresentedKey: Hashable {
        let key: String

        static func == (lhs: PresentedKey, rhs: PresentedKey) -> Bool {
            ConstantTime.equals(lhs.key, rhs.key)
        }

        func hash(into hasher: inout Hasher) {
            // The UTF-8 bytes, as `==` compares them.
            let hashed: Void? = key.utf8.withContiguousStorageIfAvailable { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
            if hashed == nil { for byte in key.utf8 { hasher.combine(byte) } }
        }
    }

    /// The most keys kept.
    let capacity: Int
    private let hashes: Mutex<[PresentedKey: String]>

    /// - Parameter capacity: the most keys kept (at least 1).
    init(capacity: Int = 4096) {
        self.capacity = max(1, capacity)
        self.hashes = Mutex([:])
    }

    /// The hash of `key`, if cached.
    func hash(of key: String) -> String? {
        let presented = PresentedKey(key: key)
        return hashes.withLock { $0[presented] }
    }

    /// Keeps `hash` as the hash of `key` (which must be `APIKeys.hash(key)`).
    func store(_ hash: String, of key: String) {
        let presented = PresentedKey(key: key)
        hashes.withLock { hashes in
            if hashes.count >= capacity, hashes[presented] == nil { hashes.removeAll(keepingCapacity: true) }
            hashes[presented] = hash
        }
    }

    /// How many keys are cached.
    var count: Int { hashes.withLock { $0.count } }
}
