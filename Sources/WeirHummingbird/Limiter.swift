import HTTPTypes
import Synchronization
import WeirCore
import WeirPolicy

/// Decides calls by (account, API, model, units): resolves them through a catalogue
/// to a limit key and limits, and asks a store.
///
/// The catalogue can be replaced while calls are decided (a config reload): each call
/// is resolved against one catalogue, the one current when it started. Usage already
/// recorded in the store is kept across a replacement.
///
/// Concurrency: thread-safe. A decision takes one short lock to read the current
/// catalogue, then whatever the store takes.
public final class Limiter: Sendable {
    /// Where the usage lives.
    public let store: any RateLimitStore
    private let current: Mutex<Catalogue>
    private let profiles: @Sendable (String, Catalogue) -> AccountProfile

    /// Creates a limiter.
    ///
    /// - Parameters:
    ///   - profiles: the profile of an account id under a catalogue. Defaults to the
    ///     catalogue's own account of that id, else a new account (lowest tier, no
    ///     overrides). A server merges its registry in here.
    public init(
        catalogue: Catalogue,
        store: any RateLimitStore,
        profiles: (@Sendable (String, Catalogue) -> AccountProfile)? = nil
    ) {
        self.store = store
        self.current = Mutex(catalogue)
        self.profiles = profiles ?? { id, catalogue in catalogue.account(id: id) ?? AccountProfile(id: id) }
    }

    /// The catalogue calls are resolved against now.
    public var catalogue: Catalogue {
        current.withLock { $0 }
    }

    /// Replaces the catalogue; the next call is resolved against `catalogue`.
    public func replaceCatalogue(_ catalogue: Catalogue) {
        current.withLock { $0 = catalogue }
    }

    /// The profile of `account` under the current catalogue.
    public func profile(account: String) -> AccountProfile {
        profiles(account, catalogue)
    }

    /// Decides one call of `account`.
    ///
    /// - Parameters:
    ///   - units: the call's estimated cost on the rule's meter (tokens, characters, images).
    ///   - leaseTTL: nanoseconds; pass one to get a lease to settle (and, where the rule
    ///     limits concurrency, to hold a slot until then).
    /// - Throws: `ResolutionError` when the catalogue does not serve (API, model) for the
    ///   account; the store's errors (`StoreError`) when it fails.
    public func acquire(
        account: String, api: String, model: String, units: UInt64, leaseTTL: UInt64?
    ) async throws -> LimitedDecision {
        let catalogue = self.catalogue
        return try await acquire(
            profile: profiles(account, catalogue), catalogue: catalogue,
            api: api, model: model, units: units, leaseTTL: leaseTTL)
    }

    /// Decides one call of an account whose profile the caller has already worked out.
    public func acquire(
        profile: AccountProfile, catalogue: Catalogue, api: String, model: String, units: UInt64, leaseTTL: UInt64?
    ) async throws -> LimitedDecision {
        let resolution = try catalogue.resolve(account: profile, api: api, model: model)
        let decision = try await store.acquire(
            AdmissionRequest(key: resolution.key, limits: resolution.limits, units: units, leaseTTL: leaseTTL))
        return LimitedDecision(decision: decision, resolution: resolution, units: units)
    }

    /// Settles `lease` with the units the call actually used and frees its slot.
    ///
    /// - Throws: `LeaseError` for unknown, settled or expired leases; the store's errors.
    public func settle(_ lease: LeaseID, actualUnits: UInt64) async throws -> SettledLease {
        let settlement = try await store.settle(lease, actualUnits: actualUnits)
        return SettledLease(settlement: settlement)
    }
}

/// A decision together with what it was decided against.
public struct LimitedDecision: Sendable {
    public var decision: Decision
    public var resolution: Resolution
    /// The units the call asked for.
    public var units: UInt64

    public init(decision: Decision, resolution: Resolution, units: UInt64) {
        self.decision = decision
        self.resolution = resolution
        self.units = units
    }

    /// Whether the caller must be refused (a denial outside shadow mode).
    public var isDenied: Bool { !decision.isAllowed }

    /// The rate limit headers of this decision (`Retry-After` included when denied).
    public var headers: HTTPFields {
        var fields = HTTPFields()
        addHeaders(to: &fields)
        return fields
    }

    /// Adds the rate limit headers of this decision to `fields`.
    public func addHeaders(to fields: inout HTTPFields) {
        RateLimitHeaders.add(
            to: &fields, statuses: decision.limits, windows: resolution.limits,
            denied: isDenied ? decision.reason : nil,
            retryAfter: isDenied ? decision.retryAfter : nil)
    }

    /// Appends the rate limit headers of this decision as HTTP/1.1 header lines.
    public func appendHTTP1Headers(to bytes: inout [UInt8]) {
        RateLimitHeaders.appendHTTP1(
            to: &bytes, statuses: decision.limits, windows: resolution.limits,
            denied: isDenied ? decision.reason : nil,
            retryAfter: isDenied ? decision.retryAfter : nil)
    }

    /// The rate limit headers of this decision as (name, value) pairs.
    public var headerPairs: [(String, String)] {
        RateLimitHeaders.pairs(
            statuses: decision.limits, windows: resolution.limits,
            denied: isDenied ? decision.reason : nil,
            retryAfter: isDenied ? decision.retryAfter : nil)
    }

    /// What a person reads on a refusal: the limit, the dimension, what was used, what
    /// was asked and when to retry. Nil when the call fits.
    ///
    /// `rate limit exceeded for text/MiniMax-M2 (rule text-minimax-m2, tier free): 20
    /// requests per 1m0s, 20 used, 1 asked; retry in 49.75s`.
    public var message: String? {
        messageBytes.map { String(decoding: $0, as: UTF8.self) }
    }

    /// `message` as UTF-8, printed without intermediate strings (it is in every 429).
    public var messageBytes: [UInt8]? {
        guard let reason = decision.reason else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(192)
        func text(_ value: String) { bytes.append(contentsOf: value.utf8) }
        func number(_ value: UInt64) { JSONWriter.appendDecimal(value, to: &bytes) }
        func location() {
            text(resolution.key.scope)
            text(" (rule ")
            text(resolution.rule.name)
            text(", tier ")
            text(resolution.tier.name)
            text(")")
        }
        let unit = Self.unitName(resolution.rule.meter)
        switch reason {
        case .tooLarge:
            text("request too large for ")
            location()
            text(": it asks for ")
            number(units)
            text(" ")
            text(unit)
            text(", more than the limit of ")
            if let tokens = resolution.limits.tokens {
                number(tokens.algorithm == .gcra ? tokens.burst : tokens.limit)
                text(" ")
                text(unit)
                text(" per ")
                GoDuration.append(nanoseconds: tokens.window, to: &bytes)
            } else {
                text("its limit")
            }
            text("; it can never be admitted")
        case .requests, .tokens:
            let dimension: Dimension = reason == .requests ? .requests : .tokens
            let status = decision.limits[dimension]
            text("rate limit exceeded for ")
            location()
            text(": ")
            number(status?.limit ?? 0)
            text(" ")
            text(dimension == .requests ? "requests" : unit)
            text(" per ")
            if let window = resolution.limits[dimension]?.window {
                GoDuration.append(nanoseconds: window, to: &bytes)
            } else {
                text("window")
            }
            text(", ")
            number(status.map { $0.limit - min($0.remaining, $0.limit) } ?? 0)
            text(" used, ")
            number(dimension == .requests ? 1 : units)
            text(" asked; ")
            if let retryAfter = decision.retryAfter {
                text("retry in ")
                GoDuration.append(nanoseconds: retryAfter, to: &bytes)
            } else {
                text("retry later")
            }
        case .concurrency:
            let status = decision.limits.concurrency
            text("concurrency limit reached for ")
            location()
            text(": ")
            number(status?.limit ?? 0)
            text(" calls in flight at once, ")
            number(status.map { $0.limit - min($0.remaining, $0.limit) } ?? 0)
            text(" in flight; retry when one finishes")
        }
        return bytes
    }

    static func unitName(_ meter: Meter) -> String {
        switch meter {
        case .tokens: "tokens"
        case .characters: "characters"
        case .images: "images"
        case .none: "units"
        }
    }
}

/// A settlement, with the rate limit headers it answers with.
public struct SettledLease: Sendable {
    public var settlement: Settlement

    /// The limits the lease was taken under (their windows go into `RateLimit-Policy`).
    public var windows: LimitSet { settlement.limitSet }

    public init(settlement: Settlement) {
        self.settlement = settlement
    }

    /// Appends the rate limit headers after the settlement as HTTP/1.1 header lines.
    public func appendHTTP1Headers(to bytes: inout [UInt8]) {
        RateLimitHeaders.appendHTTP1(to: &bytes, statuses: settlement.limits, windows: windows)
    }

    /// The rate limit headers after the settlement, as (name, value) pairs.
    public var headerPairs: [(String, String)] {
        RateLimitHeaders.pairs(statuses: settlement.limits, windows: windows)
    }

    /// The rate limit headers after the settlement.
    public var headers: HTTPFields {
        var fields = HTTPFields()
        RateLimitHeaders.add(to: &fields, statuses: settlement.limits, windows: windows)
        return fields
    }
}
