import CoreMetrics
import Foundation
import Logging
import SwiftProtobuf
import WeirCore
import WeirAnswers
import WeirPolicy

/// Envoy's `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, answered by
/// Weir's limiter: each descriptor that reads as a call (`DescriptorCall`) is decided
/// like `POST /v1/acquire`, against the same catalogue, registry and store.
///
/// **The answer.** One `DescriptorStatus` per descriptor, in order: `code`,
/// `current_limit` (the limit of the dimension that denied, else of requests, else
/// tokens; `requests_per_unit` is that limit, clamped to 2^32-1, its window as unit and
/// multiplier), `limit_remaining` and `duration_until_reset` (rounded up to whole
/// milliseconds). `overall_code` is OVER_LIMIT when any descriptor is. The response
/// headers are Weir's own (`x-ratelimit-*`, `RateLimit-Policy`, `RateLimit`, and
/// `Retry-After` on a denial), those of the first denied call, else of the first
/// call; a denial also carries `raw_body` (the MiniMax envelope and the OpenAI error
/// shape, code `rate_limit_exceeded`) with `content-type: application/json`, so that
/// Envoy's 429 reads like Weir's own.
///
/// **Descriptors that name no call** (another domain, missing entries, an unknown API
/// key, API or model) get the configured answer (`unknownDescriptors`) and are counted
/// in `weir_envoy_unknown_descriptors_total{reason}`; never an RPC error. A model that
/// the account's tier may not use is OVER_LIMIT (its limit is zero).
///
/// **Several call descriptors** in one request are decided one after the other, each
/// atomically; a call admitted before a later one is denied stays charged (as with
/// Envoy's reference service).
///
/// **Errors.** Only a store failure is an RPC error (`unavailable`), so that Envoy's
/// `failure_mode_deny` decides what the client sees.
///
/// **Served** by `EnvoyRateLimitServer` as the unary method `shouldRateLimit`, decided on
/// the connection's event loop when the store is in memory.
///
/// Concurrency: thread-safe; calls are answered concurrently. A decision is what the
/// limiter's store takes (the in-memory store answers at once).
public final class EnvoyRateLimitService: Sendable {
    public typealias Request = Envoy_Service_Ratelimit_V3_RateLimitRequest
    public typealias Response = Envoy_Service_Ratelimit_V3_RateLimitResponse

    let limiter: Limiter
    let configuration: EnvoyServiceConfiguration
    private let accountForAPIKey: @Sendable (String) -> String?
    private let logger: Logger
    private let unknownCounters: [UnknownDescriptorReason: Counter]
    private let requestCounters: (ok: Counter, overLimit: Counter)
    private let usageCounter: Counter

    /// Creates the service.
    ///
    /// - Parameters:
    ///   - accountForAPIKey: the account owning an API key, or nil (a server passes its
    ///     registry lookup).
    ///   - metricsFactory: where this service's counters are created (once, here).
    public init(
        limiter: Limiter,
        configuration: EnvoyServiceConfiguration,
        accountForAPIKey: @escaping @Sendable (String) -> String?,
        metricsFactory: any MetricsFactory = MetricsSystem.factory,
        logger: Logger = Logger(label: "weir.envoy")
    ) {
        self.limiter = limiter
        self.configuration = configuration
        self.accountForAPIKey = accountForAPIKey
        self.logger = logger
        var counters: [UnknownDescriptorReason: Counter] = [:]
        for reason in UnknownDescriptorReason.allCases {
            counters[reason] = Counter(
                label: "weir_envoy_unknown_descriptors_total",
                dimensions: [("reason", reason.rawValue), ("answer", configuration.unknownDescriptors.rawValue)],
                factory: metricsFactory)
        }
        unknownCounters = counters
        requestCounters = (
            Counter(label: "weir_envoy_requests_total", dimensions: [("code", "ok")], factory: metricsFactory),
            Counter(label: "weir_envoy_requests_total", dimensions: [("code", "over_limit")], factory: metricsFactory)
        )
        usageCounter = Counter(label: "weir_envoy_usage_units_total", factory: metricsFactory)
    }

    // MARK: - RPC

    /// `ShouldRateLimit` as a unary gRPC method (`GRPCUnaryHandler`): the request
    /// decoded, answered, the answer encoded. A request that does not decode is
    /// `INTERNAL` (as grpc-go answers); a store failure is `UNAVAILABLE`, so that Envoy's
    /// `failure_mode_deny` decides what the client sees.
    public var shouldRateLimit: GRPCUnaryMethod {
        GRPCUnaryMethod { [self] message, cancellable in
            let request: Request
            do {
                request = try Request(serializedBytes: Array(message.readableBytesView))
            } catch {
                return .ready(.failure(GRPCStatus(.internal, "the RateLimitRequest does not decode: \(error)")))
            }
            // A call that may wait for room can be given up by the handler (stream reset,
            // deadline, connection closed); only such requests pay for the cancellation.
            var cancellation: WaitCancellation?
            if configuration.maxWait > 0, limiter.rulesWait || Self.asksToWait(request) {
                let made = WaitCancellation()
                cancellable(made)
                cancellation = made
            }
            return answer(request, cancellation: cancellation).map { [self] result in
                switch result {
                case .success(let response):
                    do {
                        return .success(try response.serializedBytes())
                    } catch {
                        return .failure(GRPCStatus(.internal, "the RateLimitResponse does not encode: \(error)"))
                    }
                case .failure(is WaitCancelled):
                    return .failure(GRPCStatus(.cancelled, "the call ended while it waited for room"))
                case .failure(let error as StoreError):
                    logger.error("rate limit store failed; Envoy applies its failure mode", metadata: ["error": "\(error)"])
                    return .failure(GRPCStatus(.unavailable, "rate limit store unavailable: \(error.message)"))
                case .failure(let error):
                    return .failure(GRPCStatus(.unknown, "\(error)"))
                }
            }
        }
    }

    /// The answer to `request`: `.ready` when the limiter answers at once (the
    /// in-memory store: decided on the caller's thread), else `.later`.
    ///
    /// Fails with `StoreError` when the store fails.
    ///
    /// - Parameter cancellation: ends the waits of descriptors with `max_wait_ms` when
    ///   the caller gives up.
    public func answer(_ request: Request, cancellation: WaitCancellation? = nil) -> Pending<Result<Response, any Error>> {
        logger.trace("ShouldRateLimit", metadata: ["request": "\(request.textFormatString())"])
        var reply = Reply()
        reply.response.statuses.reserveCapacity(request.descriptors.count)
        return proceed(request, from: 0, reply: reply, cancellation: cancellation)
    }

    /// Whether a descriptor of `request` has a `max_wait_ms` entry.
    static func asksToWait(_ request: Request) -> Bool {
        request.descriptors.contains { $0.entries.contains { $0.key == "max_wait_ms" } }
    }

    /// Decides the descriptors of `request` from `start` on, at once while the limiter
    /// answers at once; from the first one that it answers later, in its completion.
    private func proceed(
        _ request: Request, from start: Int, reply: Reply, cancellation: WaitCancellation?
    ) -> Pending<Result<Response, any Error>> {
        var reply = reply
        let descriptors = request.descriptors
        var index = start
        while index < descriptors.count {
            switch outcome(of: descriptors[index], in: request, cancellation: cancellation) {
            case .ready(.success(let outcome)):
                reply.add(outcome)
            case .ready(.failure(let error)):
                return .ready(.failure(error))
            case .later(let wait):
                let next = index + 1
                let sofar = reply
                return Pending.later(wait).flatMap { [self] result in
                    switch result {
                    case .failure(let error):
                        return .ready(.failure(error))
                    case .success(let outcome):
                        var reply = sofar
                        reply.add(outcome)
                        return proceed(request, from: next, reply: reply, cancellation: cancellation)
                    }
                }
            }
            index += 1
        }
        return .ready(.success(finish(reply)))
    }

    /// What the descriptors decided so far come to.
    private struct Reply: Sendable {
        var response = Response()
        /// The outcome whose headers the answer carries: the first denied, else the
        /// first decided.
        var headerSource: Outcome?
        var denied = false

        mutating func add(_ outcome: Outcome) {
            response.statuses.append(outcome.status)
            if outcome.status.code == .overLimit {
                if !denied { headerSource = outcome }
                denied = true
            } else if headerSource == nil, outcome.decision != nil {
                headerSource = outcome
            }
        }
    }

    private func finish(_ reply: Reply) -> Response {
        var response = reply.response
        let denied = reply.denied
        response.overallCode = denied ? .overLimit : .ok
        (denied ? requestCounters.overLimit : requestCounters.ok).increment()
        if let source = reply.headerSource {
            let pairs = source.decision?.headerPairs ?? []
            let body = denied ? source.body : nil
            response.responseHeadersToAdd.reserveCapacity(pairs.count + (body == nil ? 0 : 1))
            for (name, value) in pairs {
                response.responseHeadersToAdd.append(Self.header(name, value))
            }
            if let body {
                response.responseHeadersToAdd.append(Self.header("content-type", "application/json"))
                response.rawBody = Data(body)
            }
        }
        return response
    }

    /// What one descriptor comes to.
    private func outcome(
        of descriptor: Envoy_Extensions_Common_Ratelimit_V3_RateLimitDescriptor, in request: Request,
        cancellation: WaitCancellation?
    ) -> Pending<Result<Outcome, any Error>> {
        guard request.domain == configuration.domain else { return .ready(.success(unknown(.domain))) }
        let read = DescriptorCall.read(
            entries: descriptor.entries, key: \.key, value: \.value,
            descriptorHits: descriptor.hasHitsAddend ? descriptor.hitsAddend.value : nil,
            requestHits: request.hitsAddend,
            negativeHits: descriptor.isNegativeHits)
        switch read {
        case .failure(let reason): return .ready(.success(unknown(reason)))
        case .success(let call): return decide(call, cancellation: cancellation)
        }
    }

    // MARK: - Deciding

    /// What one descriptor came to.
    struct Outcome: Sendable {
        var status: Response.DescriptorStatus
        /// The call's decision, when one was taken (headers come from it).
        var decision: LimitedDecision?
        /// The 429 body, for a refusal.
        var body: [UInt8]?
    }

    private func unknown(_ reason: UnknownDescriptorReason) -> Outcome {
        unknownCounters[reason]?.increment()
        var status = Response.DescriptorStatus()
        status.code = configuration.unknownDescriptors == .allow ? .ok : .overLimit
        var body: [UInt8]?
        if status.code == .overLimit {
            body = Self.refusalBody(message: "rate limit service: request refused (\(reason.rawValue.replacingOccurrences(of: "_", with: " ")))")
        }
        return Outcome(status: status, decision: nil, body: body)
    }

    private func decide(_ call: DescriptorCall, cancellation: WaitCancellation?) -> Pending<Result<Outcome, any Error>> {
        let account: String
        switch call.identity {
        case .account(let id): account = id
        case .apiKey(let key):
            guard let owner = accountForAPIKey(key) else { return .ready(.success(unknown(.unknownAPIKey))) }
            account = owner
        }
        let resolution: Resolution
        do {
            resolution = try limiter.resolve(account: account, api: call.api, model: call.model)
        } catch {
            switch error {
            case .unknownAPI: return .ready(.success(unknown(.unknownAPI)))
            case .unknownModel: return .ready(.success(unknown(.unknownModel)))
            case .notAvailable:
                var status = Response.DescriptorStatus()
                status.code = .overLimit
                return .ready(.success(Outcome(status: status, decision: nil, body: Self.refusalBody(message: "model: \(error)"))))
            }
        }
        switch call.charge {
        case .call:
            // A wait asked beyond the server's bound is held to it (Envoy cannot be told 400).
            let bound = configuration.maxWait
            let maxWait = call.maxWaitMilliseconds.map { min($0, bound / Nanoseconds.perMillisecond) * Nanoseconds.perMillisecond }
                ?? min(resolution.rule.maxWait ?? 0, bound)
            return limiter.acquire(
                resolution, units: call.units, leaseTTL: nil, model: call.model, maxWait: maxWait, cancellation: cancellation
            ).map { result in
                result.map { limited in
                    Outcome(
                        status: Self.status(of: limited), decision: limited,
                        body: limited.isDenied ? Self.refusalBody(message: limited.message ?? "rate limit exceeded") : nil)
                }
            }
        case .usage:
            return reportUsage(call, resolution: resolution)
        }
    }

    /// Adds `call.units` to the tokens dimension of `resolution`'s key, after the fact
    /// (`Limiter.reportUsage`: no request is counted; refused while the tokens dimension
    /// is already over its limit).
    private func reportUsage(_ call: DescriptorCall, resolution: Resolution) -> Pending<Result<Outcome, any Error>> {
        var status = Response.DescriptorStatus()
        status.code = .ok
        guard let tokens = resolution.limits.tokens else { return .ready(.success(Outcome(status: status, decision: nil, body: nil))) }
        let unchanged = status
        return limiter.reportUsage(resolution, units: call.units).map { [self] result in
            var status = unchanged
            switch result {
            case .success(let report):
                usageCounter.increment(by: Int64(clamping: report.charged))
                if let tokensStatus = report.tokens {
                    Self.fill(&status, dimension: .tokens, status: tokensStatus, window: tokens.window, resolution: resolution)
                }
                return .success(Outcome(status: status, decision: nil, body: nil))
            case .failure(let error as LeaseError):
                // A lease settled within its own second cannot be unknown, settled or
                // expired unless the store lost it; say so rather than fail the RPC.
                logger.warning("usage report not recorded", metadata: ["error": "\(error)"])
                return .success(Outcome(status: status, decision: nil, body: nil))
            case .failure(let error):
                return .failure(error)
            }
        }
    }

    // MARK: - Statuses and bodies

    /// The descriptor status of a decided call.
    static func status(of limited: LimitedDecision) -> Response.DescriptorStatus {
        var status = Response.DescriptorStatus()
        status.code = limited.isDenied ? .overLimit : .ok
        let statuses = limited.decision.limits
        let present: WeirCore.Dimension? =
            statuses.requests != nil ? .requests
            : statuses.tokens != nil ? .tokens
            : statuses.concurrency != nil ? .concurrency : nil
        let dimension: WeirCore.Dimension?
        switch limited.decision.reason {
        case .requests?: dimension = .requests
        case .tokens?: dimension = .tokens
        case .concurrency?: dimension = .concurrency
        case .tooLarge?: dimension = statuses.tokens != nil ? .tokens : present
        case nil: dimension = present
        }
        if let dimension, let dimensionStatus = statuses[dimension] {
            let window = limited.resolution.limits[dimension]?.window ?? 0
            fill(&status, dimension: dimension, status: dimensionStatus, window: window, resolution: limited.resolution)
        }
        return status
    }

    private static func fill(
        _ status: inout Response.DescriptorStatus, dimension: WeirCore.Dimension, status dimensionStatus: DimensionStatus,
        window: UInt64, resolution: Resolution
    ) {
        var limit = Response.RateLimit()
        limit.name = limitName(resolution: resolution, dimension: dimension)
        limit.requestsPerUnit = UInt32(clamping: dimensionStatus.limit)
        if dimension != .concurrency {
            let (timeUnit, multiplier) = Self.unit(ofWindow: window)
            limit.unit = timeUnit
            if multiplier != 1 {
                var wrapped = Google_Protobuf_UInt32Value()
                wrapped.value = multiplier
                limit.unitMultiplier = wrapped
            }
        }
        status.currentLimit = limit
        status.limitRemaining = UInt32(clamping: dimensionStatus.remaining)
        status.durationUntilReset = duration(nanoseconds: dimensionStatus.reset)
    }

    /// `current_limit.name`: `<scope> <dimension> (rule <rule>, tier <tier>)`, e.g.
    /// `text/MiniMax-M2 requests (rule text-minimax-m2, tier free)`, printed into one
    /// allocation.
    static func limitName(resolution: Resolution, dimension: WeirCore.Dimension) -> String {
        let scope = resolution.key.scope
        let rule = resolution.rule.name
        let tier = resolution.tier.name
        var name = String()
        name.reserveCapacity(scope.utf8.count + dimension.rawValue.utf8.count + rule.utf8.count + tier.utf8.count + 16)
        name += scope
        name += " "
        name += dimension.rawValue
        name += " (rule "
        name += rule
        name += ", tier "
        name += tier
        name += ")"
        return name
    }

    /// A window as Envoy's unit and multiplier: the largest of day, hour, minute and
    /// second that divides it (sub-second windows round up to one second).
    static func unit(ofWindow window: UInt64) -> (Response.RateLimit.Unit, UInt32) {
        let seconds = max(Nanoseconds.secondsRoundedUp(window), 1)
        if seconds % 86_400 == 0 { return (.day, UInt32(clamping: seconds / 86_400)) }
        if seconds % 3_600 == 0 { return (.hour, UInt32(clamping: seconds / 3_600)) }
        if seconds % 60 == 0 { return (.minute, UInt32(clamping: seconds / 60)) }
        return (.second, UInt32(clamping: seconds))
    }

    /// `nanoseconds` rounded up to whole milliseconds, as a protobuf Duration.
    static func duration(nanoseconds: UInt64) -> Google_Protobuf_Duration {
        let milliseconds = Nanoseconds.millisecondsRoundedUp(nanoseconds)
        var duration = Google_Protobuf_Duration()
        duration.seconds = Int64(clamping: milliseconds / 1000)
        duration.nanos = Int32(milliseconds % 1000) * 1_000_000
        return duration
    }

    private static func header(_ name: String, _ value: String) -> Envoy_Config_Core_V3_HeaderValue {
        var header = Envoy_Config_Core_V3_HeaderValue()
        header.key = name
        header.value = value
        return header
    }

    /// The body of a 429: `{"base_resp": {"status_code": 1002, "status_msg"}, "error":
    /// {"code": "rate_limit_exceeded", "type": "rate_limit_exceeded", "message"}}`, the
    /// MiniMax envelope and the OpenAI error shape in one object.
    static func refusalBody(message: String) -> [UInt8] {
        var json = JSONWriter(capacity: 256)
        json.beginObject()
        json.key("base_resp")
        json.beginObject()
        json.field("status_code", UInt64(1002))
        json.field("status_msg", message)
        json.endObject()
        json.key("error")
        json.beginObject()
        json.field("code", "rate_limit_exceeded")
        json.field("type", "rate_limit_exceeded")
        json.field("message", message)
        json.endObject()
        json.endObject()
        return json.bytes
    }
}
