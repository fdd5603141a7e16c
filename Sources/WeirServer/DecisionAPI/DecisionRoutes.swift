import HTTPTypes
import Hummingbird
import WeirCore
import WeirAnswers
import WeirPolicy

/// An answer of the decision API, independent of the HTTP stack that sends it (the
/// Hummingbird routes and the event-loop fast path both send these).
struct DecisionAnswer: Sendable {
    /// Where the rate limit headers come from.
    enum RateLimits {
        case none
        case decision(LimitedDecision)
        case settlement(SettledLease)
        /// Only `Retry-After` (whole seconds): the store is unavailable.
        case retryAfter(Int)
    }

    var status: HTTPResponse.Status
    var rateLimits: RateLimits
    /// The JSON body, UTF-8.
    var body: [UInt8]

    init(status: HTTPResponse.Status, rateLimits: RateLimits = .none, body: [UInt8]) {
        self.status = status
        self.rateLimits = rateLimits
        self.body = body
    }

    init(_ error: APIError) {
        self.init(
            status: error.status, rateLimits: error.status == .serviceUnavailable ? .retryAfter(1) : .none,
            body: Array(error.json.utf8))
    }

    /// The rate limit headers, (name, value); `Content-Type: application/json` is implied.
    var headers: [(String, String)] {
        switch rateLimits {
        case .none: []
        case .decision(let limited): limited.headerPairs
        case .settlement(let settled): settled.headerPairs
        case .retryAfter(let seconds): [("Retry-After", String(seconds))]
        }
    }

    /// Appends the rate limit headers as HTTP/1.1 header lines.
    func appendHTTP1Headers(to bytes: inout [UInt8]) {
        switch rateLimits {
        case .none: break
        case .decision(let limited): limited.appendHTTP1Headers(to: &bytes)
        case .settlement(let settled): settled.appendHTTP1Headers(to: &bytes)
        case .retryAfter(let seconds): bytes.append(contentsOf: "Retry-After: \(seconds)\r\n".utf8)
        }
    }

    var response: Response {
        var fields = HTTPFields()
        for (name, value) in headers { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// `POST /v1/acquire` and `POST /v1/settle`: the decision API of DESIGN.md.
///
/// One path for both stores: parse and resolve, then the limiter decides, and the
/// answer is `Pending`: ready at once with the in-memory store (the event loop writes it
/// in `DecisionFastPath`, with nothing allocated to wait), later with Redis. The
/// Hummingbird routes (which serve these paths to in-process test clients) await the
/// same calls.
extension WeirService {
    func addDecisionRoutes(to router: Router<BasicRequestContext>) {
        router.post("/v1/acquire") { request, _ in await self.acquire(try await self.body(of: request)).value.response }
        router.post("/v1/settle") { request, _ in await self.settle(try await self.body(of: request)).value.response }
    }

    /// A parsed, resolved acquire request, ready for the limiter.
    struct PreparedAcquire {
        var resolution: Resolution
        var units: UInt64
        var leaseTTL: UInt64
        var model: String
        var started: UInt64
        /// How long the caller waits for room rather than be refused (nanoseconds; 0: not at all).
        var maxWait: UInt64 = 0
    }

    /// `{"api_key" | "account", "api", "model", "units"?, "lease_ttl_ms"?, "max_wait_ms"?}` ->
    /// 200 `{"allowed": true, "lease", "tier", "limits"}` or
    /// 429 `{"allowed": false, "reason", "retry_after_ms", "tier", "limits", "message"}`;
    /// 503 when the store fails. With `max_wait_ms`, a call that would be refused waits
    /// for room up to that long (`Limiter`'s waiting) and is answered when admitted or
    /// refused.
    ///
    /// - Parameter cancellation: cancelled when the caller goes away, so that a waiting
    ///   call stops waiting.
    func acquire(_ body: [UInt8], cancellation: WaitCancellation? = nil) -> Pending<DecisionAnswer> {
        let prepared: PreparedAcquire
        do {
            prepared = try prepareAcquire(body)
        } catch {
            return .ready(DecisionAnswer(error))
        }
        // With no wait, this is the plain decision (`Limiter` checks first).
        let decided = limiter.acquire(
            prepared.resolution, units: prepared.units, leaseTTL: prepared.leaseTTL, model: prepared.model,
            maxWait: prepared.maxWait, cancellation: cancellation)
        switch decided {
        case .ready(let result):
            return .ready(answer(result, started: prepared.started))
        case .later:
            // The completion keeps only the start time: the decision carries its resolution.
            let started = prepared.started
            return decided.map { [self] result in answer(result, started: started) }
        }
    }

    /// The answer to a decided acquire (or a 503 for a store failure); `started` (on
    /// `SystemClock`) times it.
    private func answer(_ result: Result<LimitedDecision, any Error>, started: UInt64) -> DecisionAnswer {
        switch result {
        case .success(let limited): answer(limited, started: started)
        case .failure(is WaitCancelled):
            // The caller went away while it waited: nobody reads this answer.
            DecisionAnswer(
                APIError(
                    status: .init(code: 499, reasonPhrase: "Client Closed Request"), code: "cancelled",
                    message: "the caller stopped waiting", field: nil))
        case .failure(let error): DecisionAnswer(storeError(error))
        }
    }

    /// A store failure as callers see it: 503 with a retry hint, never a 500; the
    /// details go to the log, not to the caller.
    func storeError(_ error: any Error) -> APIError {
        // An outage fails many calls in a row; `/readyz` and the store metrics report it,
        // so only a failure that is not an outage (a script error) is logged as a warning.
        if let failure = error as? StoreError, failure.isTransient {
            logger.debug("store unavailable", metadata: ["error": "\(failure)"])
        } else {
            logger.warning("store failure", metadata: ["error": "\(error)"])
        }
        return APIError(
            status: .serviceUnavailable, code: "store_unavailable",
            message: "the rate limit store is unavailable; retry shortly", field: nil)
    }

    func prepareAcquire(_ body: [UInt8]) throws(APIError) -> PreparedAcquire {
        let started = SystemClock().now()
        let fields: AcquireFields
        if let scanned = AcquireFields.scanFlat(body) {
            fields = scanned
        } else {
            fields = AcquireFields(try Self.parseObject(body))
        }
        let account = try identify(apiKey: fields.apiKey, account: fields.account)
        let api = try JSONValue.string(fields.api, "api")
        let model = try JSONValue.string(fields.model, "model", allowEmpty: true)
        let units = try JSONValue.optionalCount(fields.units, "units") ?? 0
        var ttl = AdmissionRequest.defaultLeaseTTL
        if let milliseconds = try JSONValue.optionalCount(fields.leaseTTL, "lease_ttl_ms") {
            guard milliseconds > 0, milliseconds <= Self.maximumLeaseTTLMilliseconds else {
                throw APIError.badRequest(
                    field: "lease_ttl_ms", "must be between 1 and \(Self.maximumLeaseTTLMilliseconds) (one day), got \(milliseconds)")
            }
            ttl = milliseconds * Nanoseconds.perMillisecond
        }
        var maxWait: UInt64?
        if let milliseconds = try JSONValue.optionalCount(fields.maxWait, "max_wait_ms") {
            maxWait = try waitBound(milliseconds: milliseconds, field: "max_wait_ms")
        }
        let resolution: Resolution
        do {
            resolution = try limiter.resolve(account: account, api: api, model: model)
        } catch {
            throw Self.apiError(error)
        }
        return PreparedAcquire(
            resolution: resolution, units: units, leaseTTL: ttl, model: model, started: started,
            maxWait: maxWait ?? self.ruleWait(resolution))
    }

    /// `milliseconds` a caller asks to wait (the `field` it said so in), in nanoseconds.
    ///
    /// - Throws: 400 when it is over this server's `--max-wait-ms`.
    func waitBound(milliseconds: UInt64, field: String) throws(APIError) -> UInt64 {
        let limit = maxWait / Nanoseconds.perMillisecond
        guard milliseconds <= limit else {
            throw APIError.badRequest(
                field: field,
                limit == 0
                    ? "waiting is turned off on this server (--max-wait-ms 0); send 0 or leave it out"
                    : "must be at most \(limit) (this server's --max-wait-ms), got \(milliseconds)")
        }
        return milliseconds * Nanoseconds.perMillisecond
    }

    /// How long a call of `resolution`'s rule waits for room when its caller does not
    /// say: the rule's `max_wait`, held to this server's `--max-wait-ms` (nanoseconds).
    func ruleWait(_ resolution: Resolution) -> UInt64 {
        min(resolution.rule.maxWait ?? 0, maxWait)
    }

    /// The answer to a decided acquire; `started` (on `SystemClock`) times it.
    func answer(_ limited: LimitedDecision, started: UInt64) -> DecisionAnswer {
        let resolution = limited.resolution
        let decision = limited.decision

        var json = JSONWriter(capacity: 384)
        json.beginObject()
        json.field("allowed", decision.isAllowed)
        if decision.isAllowed {
            json.field("lease", optional: decision.lease?.id.description)
            if decision.isShadowed {
                json.field("shadowed", true)
                json.field("reason", optional: decision.reason?.rawValue)
            }
        } else {
            json.field("reason", decision.reason?.rawValue ?? "requests")
            json.field("retry_after_ms", optional: decision.retryAfter.map(Nanoseconds.millisecondsRoundedUp))
        }
        json.field("tier", resolution.tier.name)
        json.key("limits")
        Self.writeLimits(decision.limits, to: &json)
        if !decision.isAllowed, let message = limited.messageBytes { json.field("message", utf8: message) }
        json.endObject()
        metrics.latency.recordNanoseconds(Int64(clamping: SystemClock().now() &- started))
        return DecisionAnswer(
            status: decision.isAllowed ? .ok : .tooManyRequests, rateLimits: .decision(limited), body: json.bytes)
    }

    /// `{"lease", "units"}` -> 200 `{"lease", "charged", "refunded", "limits"}`;
    /// 404 for a lease never issued, 409 for one settled already or expired; 503 when
    /// the store fails.
    func settle(_ body: [UInt8]) -> Pending<DecisionAnswer> {
        let lease: LeaseID
        let units: UInt64
        do {
            (lease, units) = try parseSettle(body)
        } catch {
            return .ready(DecisionAnswer(error))
        }
        return limiter.settle(lease, actualUnits: units).map { [self] result in
            switch result {
            case .success(let settled): answer(lease, settled)
            case .failure(let error as LeaseError): DecisionAnswer(Self.apiError(error))
            case .failure(let error): DecisionAnswer(storeError(error))
            }
        }
    }

    private func parseSettle(_ body: [UInt8]) throws(APIError) -> (LeaseID, UInt64) {
        let object = try Self.parseObject(body)
        let text = try object.string("lease")
        guard let lease = LeaseID(string: text) else {
            throw APIError.badRequest(field: "lease", "must be a lease id as /v1/acquire returned it (16 hexadecimal digits)")
        }
        return (lease, try object.count("units"))
    }

    static func apiError(_ error: LeaseError) -> APIError {
        switch error {
        case .unknown:
            APIError(status: .notFound, code: "unknown_lease", message: "lease: \(error)", field: "lease")
        case .alreadySettled:
            APIError(status: .conflict, code: "lease_already_settled", message: "lease: \(error)", field: "lease")
        case .expired:
            APIError(status: .conflict, code: "lease_expired", message: "lease: \(error)", field: "lease")
        }
    }

    private func answer(_ lease: LeaseID, _ settled: SettledLease) -> DecisionAnswer {
        let settlement = settled.settlement
        var json = JSONWriter(capacity: 256)
        json.beginObject()
        json.field("lease", lease.description)
        json.field("charged", settlement.charged)
        json.field("refunded", settlement.refunded)
        json.key("limits")
        Self.writeLimits(settlement.limits, to: &json)
        json.endObject()
        return DecisionAnswer(status: .ok, rateLimits: .settlement(settled), body: json.bytes)
    }

    /// The body parsed as a JSON object (400 naming `body` otherwise).
    static func parseObject(_ bytes: [UInt8]) throws(APIError) -> JSONValue {
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes)
        } catch {
            throw APIError.badRequest(field: "body", bytes.isEmpty ? "empty; expected a JSON object" : error.description)
        }
        guard case .object = value else {
            throw APIError.badRequest(field: "body", "must be a JSON object, got \(value.kind)")
        }
        return value
    }

    /// The account a decision request names: `api_key` (through the registry and the
    /// config's key hashes; 401 when no account has it) or `account`.
    func identify(apiKey: JSONValue?, account: JSONValue?) throws(APIError) -> String {
        let key = apiKey.flatMap { $0 == .null ? nil : $0 }
        let account = account.flatMap { $0 == .null ? nil : $0 }
        if key != nil && account != nil {
            throw APIError.badRequest(field: "account", "give api_key or account, not both")
        }
        if let key {
            guard case .string(let apiKey) = key else {
                throw APIError.badRequest(field: "api_key", "must be a string, got \(key.kind)")
            }
            guard !apiKey.isEmpty else { throw APIError.badRequest(field: "api_key", "must not be empty") }
            guard let owner = self.account(forAPIKey: apiKey) else { throw APIError.unknownAPIKey() }
            return owner
        }
        guard let account else {
            throw APIError.badRequest(field: "api_key", "required: give api_key or account")
        }
        let id = try JSONValue.string(account, "account")
        try validateAccountID(id, field: "account")
        return id
    }

    static func apiError(_ error: ResolutionError) -> APIError {
        switch error {
        case .unknownAPI:
            APIError(status: .badRequest, code: "unknown_api", message: "api: \(error)", field: "api")
        case .unknownModel:
            APIError(status: .badRequest, code: "unknown_model", message: "model: \(error)", field: "model")
        case .notAvailable:
            APIError(status: .forbidden, code: "model_not_available", message: "model: \(error)", field: "model")
        }
    }

    /// `[{"dimension", "limit", "remaining", "reset_ms"}]`, requests, tokens, concurrency.
    static func writeLimits(_ statuses: LimitStatuses, to json: inout JSONWriter) {
        json.beginArray()
        for dimension in Dimension.allCases {
            guard let status = statuses[dimension] else { continue }
            // One object printed from fixed text and three integers.
            json.raw(limitPrefix[dimension.rawValue]!)
            var bytes: [UInt8] = []
            bytes.reserveCapacity(64)
            JSONWriter.appendDecimal(status.limit, to: &bytes)
            bytes.append(contentsOf: #","remaining":"#.utf8)
            JSONWriter.appendDecimal(status.remaining, to: &bytes)
            bytes.append(contentsOf: #","reset_ms":"#.utf8)
            JSONWriter.appendDecimal(Nanoseconds.millisecondsRoundedUp(status.reset), to: &bytes)
            bytes.append(UInt8(ascii: "}"))
            json.appendRaw(bytes)
        }
        json.endArray()
    }

    /// `{"dimension":"<name>","limit":` per dimension.
    private static let limitPrefix: [String: String] = Dictionary(
        uniqueKeysWithValues: Dimension.allCases.map { ($0.rawValue, #"{"dimension":""# + $0.rawValue + #"","limit":"#) })
}
