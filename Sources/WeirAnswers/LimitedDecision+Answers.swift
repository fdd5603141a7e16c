import HTTPTypes
import WeirCore
import WeirPolicy

/// How a decision reads to callers of every shape: its rate limit headers (both
/// families, `Retry-After` when denied) and the sentence a refusal carries.
extension LimitedDecision {
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

    package static func unitName(_ meter: Meter) -> String {
        switch meter {
        case .tokens: "tokens"
        case .characters: "characters"
        case .images: "images"
        case .none: "units"
        }
    }
}

/// The rate limit headers after a settlement.
extension SettledLease {
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
