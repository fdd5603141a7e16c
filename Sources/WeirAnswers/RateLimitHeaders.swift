import HTTPTypes
import RawStructuredFieldValues
import Synchronization
import WeirCore

/// The rate limit headers of one decision, in both families clients read:
///
/// - the OpenAI-compatible convention: `x-ratelimit-limit-requests`,
///   `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests` (a Go-style
///   duration such as `1s` or `6m0s`, rounded up to whole milliseconds), and the
///   `-tokens` variants when the rule limits tokens;
/// - the IETF fields of draft-ietf-httpapi-ratelimit-headers, as structured field
///   lists with one quoted policy per dimension: `RateLimit-Policy: "requests";q=20;w=60,
///   "tokens";q=1000000;w=60;qu="tokens"` and `RateLimit: "requests";r=19;t=60, ...`
///   (`concurrency` has `qu="concurrent-requests"` and no window);
/// - `Retry-After` in whole seconds, rounded up, when a retry time is given (429s).
///
/// When a call is denied with a retry time, the `t` of the denying dimension is that
/// retry time, as the draft asks (`t` and `Retry-After` name the same moment).
///
/// **Cost.** These headers go out with every decision, so they are cheap to make:
/// `RateLimit-Policy` depends only on the limits and windows, so it is serialized by
/// swift-http-structured-headers once per distinct limit set and cached; `RateLimit`
/// changes with every decision and is printed directly (names from a fixed set,
/// integers only), and a test checks that it is byte for byte what the library
/// serializes (`structuredFields`).
public enum RateLimitHeaders {
    public static let limitRequests = "x-ratelimit-limit-requests"
    public static let remainingRequests = "x-ratelimit-remaining-requests"
    public static let resetRequests = "x-ratelimit-reset-requests"
    public static let limitTokens = "x-ratelimit-limit-tokens"
    public static let remainingTokens = "x-ratelimit-remaining-tokens"
    public static let resetTokens = "x-ratelimit-reset-tokens"
    public static let policy = "RateLimit-Policy"
    public static let rateLimit = "RateLimit"
    public static let retryAfter = "Retry-After"

    private static let fieldNames: [String: HTTPField.Name] = Dictionary(
        uniqueKeysWithValues: [
            limitRequests, remainingRequests, resetRequests, limitTokens, remainingTokens, resetTokens,
            policy, rateLimit, retryAfter,
        ].map { ($0, HTTPField.Name($0)!) })

    /// Adds the headers for `statuses` (as checked against `windows`) to `fields`.
    ///
    /// - Parameters:
    ///   - denied: the dimension that refused the call, if any.
    ///   - retryAfter: nanoseconds until the call would fit; adds `Retry-After` when set.
    public static func add(
        to fields: inout HTTPFields,
        statuses: LimitStatuses,
        windows: LimitSet,
        denied: DenialReason? = nil,
        retryAfter: UInt64? = nil
    ) {
        for (name, value) in pairs(statuses: statuses, windows: windows, denied: denied, retryAfter: retryAfter) {
            fields.append(HTTPField(name: fieldNames[name]!, value: value))
        }
    }

    /// The headers as (name, value) pairs, in the order they are sent.
    public static func pairs(
        statuses: LimitStatuses,
        windows: LimitSet,
        denied: DenialReason? = nil,
        retryAfter: UInt64? = nil
    ) -> [(String, String)] {
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(10)
        if let requests = statuses.requests {
            pairs.append((limitRequests, String(requests.limit)))
            pairs.append((remainingRequests, String(requests.remaining)))
            pairs.append((resetRequests, GoDuration.string(nanoseconds: requests.reset)))
        }
        if let tokens = statuses.tokens {
            pairs.append((limitTokens, String(tokens.limit)))
            pairs.append((remainingTokens, String(tokens.remaining)))
            pairs.append((resetTokens, GoDuration.string(nanoseconds: tokens.reset)))
        }
        if statuses.requests != nil || statuses.tokens != nil || statuses.concurrency != nil {
            pairs.append((policy, policyValue(statuses: statuses, windows: windows)))
            pairs.append((rateLimit, rateLimitValue(statuses: statuses, denied: denied, retryAfter: retryAfter)))
        }
        if let retryAfter {
            pairs.append((Self.retryAfter, String(Nanoseconds.secondsRoundedUp(retryAfter))))
        }
        return pairs
    }

    /// Appends the headers as HTTP/1.1 header lines (`name: value\r\n`), the same
    /// headers in the same order as `pairs`, printed straight into `bytes`.
    public static func appendHTTP1(
        to bytes: inout [UInt8],
        statuses: LimitStatuses,
        windows: LimitSet,
        denied: DenialReason? = nil,
        retryAfter: UInt64? = nil
    ) {
        func line(_ name: StaticString, _ value: UInt64) {
            bytes.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
            JSONWriter.appendDecimal(value, to: &bytes)
            bytes.append(contentsOf: [13, 10])
        }
        func duration(_ name: StaticString, _ value: UInt64) {
            bytes.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
            GoDuration.append(nanoseconds: value, to: &bytes)
            bytes.append(contentsOf: [13, 10])
        }
        if let requests = statuses.requests {
            line("x-ratelimit-limit-requests: ", requests.limit)
            line("x-ratelimit-remaining-requests: ", requests.remaining)
            duration("x-ratelimit-reset-requests: ", requests.reset)
        }
        if let tokens = statuses.tokens {
            line("x-ratelimit-limit-tokens: ", tokens.limit)
            line("x-ratelimit-remaining-tokens: ", tokens.remaining)
            duration("x-ratelimit-reset-tokens: ", tokens.reset)
        }
        if statuses.requests != nil || statuses.tokens != nil || statuses.concurrency != nil {
            bytes.append(contentsOf: "RateLimit-Policy: ".utf8)
            bytes.append(contentsOf: policyValue(statuses: statuses, windows: windows).utf8)
            bytes.append(contentsOf: "\r\nRateLimit: ".utf8)
            appendRateLimitValue(to: &bytes, statuses: statuses, denied: denied, retryAfter: retryAfter)
            bytes.append(contentsOf: [13, 10])
        }
        if let retryAfter {
            line("Retry-After: ", Nanoseconds.secondsRoundedUp(retryAfter))
        }
    }

    // MARK: - RateLimit-Policy (library-serialized, cached)

    private struct PolicyKey: Hashable {
        var requests: UInt64?
        var requestsWindow: UInt64?
        var tokens: UInt64?
        var tokensWindow: UInt64?
        var concurrency: UInt64?
    }

    /// Distinct limit sets are few (rules x tiers x overrides); past this many the
    /// value is serialized every time rather than cached.
    private static let policyCacheLimit = 4096
    private static let policyCache = Mutex<[PolicyKey: String]>([:])

    static func policyValue(statuses: LimitStatuses, windows: LimitSet) -> String {
        let key = PolicyKey(
            requests: statuses.requests?.limit, requestsWindow: statuses.requests.flatMap { _ in windows.requests?.window },
            tokens: statuses.tokens?.limit, tokensWindow: statuses.tokens.flatMap { _ in windows.tokens?.window },
            concurrency: statuses.concurrency?.limit)
        if let cached = policyCache.withLock({ $0[key] }) { return cached }
        let value = structuredFields(statuses: statuses, windows: windows).policy ?? ""
        policyCache.withLock { cache in
            if cache.count < policyCacheLimit { cache[key] = value }
        }
        return value
    }

    // MARK: - RateLimit (printed directly)

    static func appendRateLimitValue(
        to bytes: inout [UInt8], statuses: LimitStatuses, denied: DenialReason?, retryAfter: UInt64?
    ) {
        var first = true
        for dimension in Dimension.allCases {
            guard let status = statuses[dimension] else { continue }
            if !first { bytes.append(contentsOf: [44, 32]) }  // ", "
            first = false
            bytes.append(34)  // "
            bytes.append(contentsOf: dimension.rawValue.utf8)
            bytes.append(contentsOf: "\";r=".utf8)
            JSONWriter.appendDecimal(UInt64(clamp(status.remaining)), to: &bytes)
            if dimension != .concurrency {
                let reset = denied?.rawValue == dimension.rawValue ? (retryAfter ?? status.reset) : status.reset
                bytes.append(contentsOf: ";t=".utf8)
                JSONWriter.appendDecimal(UInt64(clamp(Nanoseconds.secondsRoundedUp(reset))), to: &bytes)
            }
        }
    }

    static func rateLimitValue(statuses: LimitStatuses, denied: DenialReason?, retryAfter: UInt64?) -> String {
        var text = ""
        text.reserveCapacity(96)
        for dimension in Dimension.allCases {
            guard let status = statuses[dimension] else { continue }
            if !text.isEmpty { text += ", " }
            text += "\""
            text += dimension.rawValue
            text += "\";r="
            text += String(clamp(status.remaining))
            if dimension != .concurrency {
                let reset = denied?.rawValue == dimension.rawValue ? (retryAfter ?? status.reset) : status.reset
                text += ";t="
                text += String(clamp(Nanoseconds.secondsRoundedUp(reset)))
            }
        }
        return text
    }

    // MARK: - Reference serialization

    /// The `RateLimit-Policy` and `RateLimit` values as swift-http-structured-headers
    /// serializes them, or nil when no dimension applies. The reference for the cached
    /// and directly printed values above.
    public static func structuredFields(
        statuses: LimitStatuses,
        windows: LimitSet,
        denied: DenialReason? = nil,
        retryAfter: UInt64? = nil
    ) -> (policy: String?, rateLimit: String?) {
        var policies: [ItemOrInnerList] = []
        var states: [ItemOrInnerList] = []
        for dimension in Dimension.allCases {
            guard let status = statuses[dimension] else { continue }
            var policyParameters = OrderedMap<String, RFC9651BareItem>()
            policyParameters["q"] = .integer(clamp(status.limit))
            var stateParameters = OrderedMap<String, RFC9651BareItem>()
            stateParameters["r"] = .integer(clamp(status.remaining))
            switch dimension {
            case .requests, .tokens:
                if let window = windows[dimension]?.window {
                    policyParameters["w"] = .integer(clamp(Nanoseconds.secondsRoundedUp(window)))
                }
                if dimension == .tokens { policyParameters["qu"] = .string("tokens") }
                let reset = denied?.rawValue == dimension.rawValue ? (retryAfter ?? status.reset) : status.reset
                stateParameters["t"] = .integer(clamp(Nanoseconds.secondsRoundedUp(reset)))
            case .concurrency:
                policyParameters["qu"] = .string("concurrent-requests")
            }
            policies.append(.item(Item(bareItem: .string(dimension.rawValue), parameters: policyParameters)))
            states.append(.item(Item(bareItem: .string(dimension.rawValue), parameters: stateParameters)))
        }
        guard !policies.isEmpty else { return (nil, nil) }
        var serializer = StructuredFieldValueSerializer()
        // Serialization fails only for values outside the grammar (integers over 15
        // digits, non-ASCII strings); `clamp` and the fixed names rule both out.
        let policyBytes = (try? serializer.writeListFieldValue(policies)) ?? []
        let stateBytes = (try? serializer.writeListFieldValue(states)) ?? []
        return (
            policyBytes.isEmpty ? nil : String(decoding: policyBytes, as: UTF8.self),
            stateBytes.isEmpty ? nil : String(decoding: stateBytes, as: UTF8.self)
        )
    }

    /// Structured field integers have at most 15 digits.
    private static func clamp(_ value: UInt64) -> Int64 {
        Int64(min(value, 999_999_999_999_999))
    }
}
