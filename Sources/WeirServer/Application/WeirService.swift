import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization
import WeirCore
import WeirAnswers
import NIOPosix
import WeirPolicy
import WeirRedis

/// The state behind every route: the limiter, the registry, the metrics, the config.
///
/// One instance per application. Thread-safe: requests on every event loop share it.
final class WeirService: Sendable {
    let limiter: Limiter
    /// The in-memory store: the only one by default; with a shared store, the one its
    /// `local` and `allow` failure modes decide with.
    let memoryStore: InMemoryStore
    /// The shared store (Redis, behind its denial cache and failure mode); nil in memory.
    let sharedStore: FailoverStore?
    /// Where state lives: stores, registry and the services that keep them.
    let backend: StoreBackend
    let registry: Registry
    let metrics: ServerMetrics
    /// Refusals per account, reason and minute, for the dashboard (denials only record).
    let refusals: RefusalHistory
    let logger: Logger
    let configPath: String?
    let maxBodySize: Int
    /// The longest a caller may ask to wait for room (`max_wait_ms`), in nanoseconds.
    let maxWait: UInt64
    /// SHA-256 of the admin token; nil when the admin API is disabled.
    let adminTokenHash: [UInt8]?
    /// Key hashes declared in the config file (`accounts[].api_key_hashes`) -> account id.
    private let configKeys: Mutex<[String: String]>
    /// The SHA-256 of API keys recently presented (`account(forAPIKey:)`).
    let keyHashes = APIKeyHashCache()
    /// The gateway's settlements that the shared store could not take, sent again once
    /// it answers (`SettlementRetryService`).
    let settlementRetries: SettlementRetries
    /// Serializes reloads (SIGHUP and the admin route may race).
    private let reloading = Mutex(())

    /// Largest lease TTL a caller may ask for: one day.
    static let maximumLeaseTTLMilliseconds: UInt64 = 86_400_000

    init(configuration: ServerConfiguration) async throws {
        let catalogue: Catalogue
        if let path = configuration.configPath {
            catalogue = try Catalogue.load(contentsOf: path)
        } else {
            catalogue = Catalogue.builtIn
        }
        let backend = try await StoreBackend.make(configuration)
        let registry = backend.registry
        self.backend = backend
        self.registry = registry
        self.memoryStore = backend.memory
        self.sharedStore = backend.shared
        let metrics = ServerMetrics(registry: configuration.metricsRegistry)
        metrics.prepare(catalogue)
        let refusals = RefusalHistory(clock: configuration.clock)
        self.metrics = metrics
        self.refusals = refusals
        self.limiter = Limiter(
            catalogue: catalogue, store: backend.store,
            profiles: { id, catalogue in WeirService.profile(id: id, catalogue: catalogue, registry: registry) },
            observer: DecisionRecorder(metrics: metrics, refusals: refusals, extra: configuration.observer),
            waiting: WaitSettings(
                timer: configuration.waitTimer
                    ?? EventLoopWaitTimer(
                        group: configuration.eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton, clock: configuration.clock),
                clock: configuration.clock, maxWaiting: configuration.maxWaiting))
        self.maxWait = configuration.maxWait
        self.logger = configuration.logger
        self.configPath = configuration.configPath
        self.maxBodySize = configuration.maxBodySize
        self.adminTokenHash = configuration.adminToken.map { Array(APIKeys.hash($0).utf8) }
        self.configKeys = Mutex(Self.keyIndex(catalogue))
        self.settlementRetries = SettlementRetries(
            leaseTTL: configuration.gateway?.leaseTTL ?? 0, clock: configuration.clock, logger: configuration.logger)
    }

    /// An account's profile: the config file's, with the registry's pin, recharges and
    /// overrides on top (registry recharges add to the file's; a registry override
    /// replaces the file's override of the same rule and model).
    static func profile(id: String, catalogue: Catalogue, registry: Registry) -> AccountProfile {
        let configured = catalogue.account(id: id)
        guard let registered = registry.account(id: id) else {
            return configured ?? AccountProfile(id: id)
        }
        var profile = configured ?? AccountProfile(id: id)
        if let pin = registered.pinnedTier { profile.pinnedTier = pin }
        profile.recharges += registered.recharges
        if let overrides = registered.overrides {
            profile.overrides.removeAll { old in overrides.contains { $0.rule == old.rule && $0.model == old.model } }
            profile.overrides += overrides
        }
        return profile
    }

    private static func keyIndex(_ catalogue: Catalogue) -> [String: String] {
        var index: [String: String] = [:]
        for account in catalogue.accounts {
            for hash in account.apiKeyHashes { index[hash.lowercased()] = account.id }
        }
        return index
    }

    // MARK: - Reload

    /// Reloads the config file. An invalid file is rejected, its errors logged, and
    /// the running catalogue kept.
    func reload() -> Result<Catalogue, ConfigErrors> {
        reloading.withLock { _ in
            guard let path = configPath else {
                return .failure(ConfigErrors(source: "(built-in)", errors: [
                    ConfigError(path: "", line: nil, message: "no --config file to reload: the built-in catalogue is in use")
                ]))
            }
            let loaded: Catalogue
            do throws(ConfigErrors) {
                loaded = try Catalogue.load(contentsOf: path)
            } catch {
                metrics.reloaded(success: false)
                logger.error(
                    "config reload rejected; the running config is kept",
                    metadata: ["config": "\(path)", "errors": "\(error.errors.count)"])
                for problem in error.description.split(separator: "\n") {
                    logger.error("\(problem)")
                }
                return .failure(error)
            }
            metrics.prepare(loaded)
            configKeys.withLock { $0 = Self.keyIndex(loaded) }
            limiter.replaceCatalogue(loaded)
            metrics.reloaded(success: true)
            logger.info("config reloaded", metadata: ["config": "\(path)", "rules": "\(loaded.rules.count)"])
            return .success(loaded)
        }
    }

    // MARK: - Bodies

    /// The request body, at most `maxBodySize` bytes (413 beyond).
    func body(of request: Request) async throws -> [UInt8] {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > maxBodySize {
            throw APIError.bodyTooLarge(limit: maxBodySize)
        }
        do {
            var buffer = try await request.body.collect(upTo: maxBodySize)
            return buffer.readBytes(length: buffer.readableBytes) ?? []
        } catch is NIOTooManyBytesError {
            throw APIError.bodyTooLarge(limit: maxBodySize)
        }
    }

    /// The body parsed as a JSON object (400 naming `body` otherwise).
    func jsonObject(of request: Request) async throws -> JSONValue {
        try Self.parseObject(try await body(of: request))
    }


    // MARK: - Accounts by key

    /// The account owning `apiKey`, from the registry or the config file's hashes.
    ///
    /// The key's SHA-256 comes from `keyHashes` when the key was presented before (and
    /// named an account then); who owns that hash is read afresh on every call, so a
    /// revocation, a new key or a reload counts at once.
    func account(forAPIKey apiKey: String) -> String? {
        let cached = keyHashes.hash(of: apiKey)
        let hash = cached ?? APIKeys.hash(apiKey)
        let account = registry.accountID(forKeyHash: hash) ?? configKeys.withLock({ $0[hash] })
        if cached == nil, account != nil { keyHashes.store(hash, of: apiKey) }
        return account
    }
}

/// Counts every decision in `weir_decisions_total` (labels from the rule, never from
/// the request) and, when it refuses, in the dashboard's refusal history: the limiter's
/// observer, so every shape is counted the same way, once per decision. Never blocks
/// beyond a metric's or the history's lock.
struct DecisionRecorder: DecisionObserver {
    let metrics: ServerMetrics
    let refusals: RefusalHistory
    /// The configuration's own observer, told after the server's records.
    let extra: (any DecisionObserver)?

    func settled(_ lease: SettledLease) {
        extra?.settled(lease)
    }

    func waited(_ outcome: WaitOutcome, nanoseconds: UInt64) {
        metrics.recordWait(outcome)
        extra?.waited(outcome, nanoseconds: nanoseconds)
    }

    func decided(_ limited: LimitedDecision) {
        let decision = limited.decision
        let resolution = limited.resolution
        metrics.record(
            api: resolution.rule.api, model: ServerMetrics.modelLabel(rule: resolution.rule, model: limited.model),
            decision: decision)
        if !decision.isAllowed { refusals.record(account: resolution.key.account, reason: decision.reason ?? .requests) }
        extra?.decided(limited)
    }
}

// MARK: - Field readers

extension JSONValue {
    /// A required string member.
    func string(_ name: String, allowEmpty: Bool = false) throws(APIError) -> String {
        try Self.string(self[name], name, allowEmpty: allowEmpty)
    }

    /// An optional non-negative integer member.
    func optionalCount(_ name: String) throws(APIError) -> UInt64? {
        try Self.optionalCount(self[name], name)
    }

    /// A required non-negative integer member.
    func count(_ name: String) throws(APIError) -> UInt64 {
        guard let count = try optionalCount(name) else { throw .badRequest(field: name, "required") }
        return count
    }

    /// `value` (the member `name`, nil when absent) as a required string.
    static func string(_ value: JSONValue?, _ name: String, allowEmpty: Bool = false) throws(APIError) -> String {
        switch value {
        case nil, .null?: throw .badRequest(field: name, "required")
        case .string(let text)?:
            if text.isEmpty && !allowEmpty { throw .badRequest(field: name, "must not be empty") }
            return text
        case let other?: throw .badRequest(field: name, "must be a string, got \(other.kind)")
        }
    }

    /// `value` (the member `name`, nil when absent) as an optional non-negative integer.
    static func optionalCount(_ value: JSONValue?, _ name: String) throws(APIError) -> UInt64? {
        guard let value, value != .null else { return nil }
        switch value.integerReading {
        case .count(let count): return count
        case .tooLarge: throw .badRequest(field: name, "too large: at most \(UInt64.max)")
        case .notCount: throw .badRequest(field: name, "must be a non-negative integer, got \(value.kind)")
        }
    }
}

/// Account ids: 1 to 256 bytes, no control characters.
func validateAccountID(_ id: String, field: String) throws(APIError) {
    guard !id.isEmpty else { throw .badRequest(field: field, "must not be empty") }
    guard id.utf8.count <= 256 else { throw .badRequest(field: field, "longer than 256 bytes") }
    guard !id.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
        throw .badRequest(field: field, "must not contain control characters")
    }
}
