import HTTPTypes
import Hummingbird
import WeirCore
import WeirHummingbird
import WeirPolicy

/// An answer of the decision API, independent of the HTTP stack that sends it (the
/// Hummingbird routes and the event-loop fast path both send these).
struct DecisionAnswer {
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
/// With the in-memory store a decision is synchronous: parse, resolve, ask the store
/// (which never suspends), write the answer; the same code serves the Hummingbird
/// routes and `DecisionFastPath`, which answers on the event loop. With a shared store
/// (Redis) the store call suspends: the routes await it between the same synchronous
/// halves (`prepareAcquire`, `answer`), and the fast path hands these requests on.
extension WeirService {
    func addDecisionRoutes(to router: Router<BasicRequestContext>) {
        router.post("/v1/acquire") { request, _ in await self.acquireAsync(try await self.body(of: request)).response }
        router.post("/v1/settle") { request, _ in await self.settleAsync(try await self.body(of: request)).response }
    }

    /// A parsed, resolved acquire request, ready for the store.
    struct PreparedAcquire {
        var request: AdmissionRequest
        var resolution: Resolution
        var model: String
        var started: UInt64
    }

    /// `{"api_key" | "account", "api", "model", "units"?, "lease_ttl_ms"?}` ->
    /// 200 `{"allowed": true, "lease", "tier", "limits"}` or
    /// 429 `{"allowed": false, "reason", "retry_after_ms", "tier", "limits", "message"}`.
    ///
    /// Synchronous: only with the in-memory store (`sharedStore == nil`).
    func acquire(_ body: [UInt8]) -> DecisionAnswer {
        do {
            let prepared = try prepareAcquire(body)
            return answer(prepared, decision: memoryStore.acquire(prepared.request))
        } catch {
            return DecisionAnswer(error)
        }
    }

    /// `acquire(_:)` through whichever store the service runs on.
    func acquireAsync(_ body: [UInt8]) async -> DecisionAnswer {
        guard sharedStore != nil else { return acquire(body) }
        do {
            let prepared = try prepareAcquire(body)
            return answer(prepared, decision: try await decide(prepared.request))
        } catch {
            // Both throw `APIError` only (a store failure is one already: `decide`).
            return DecisionAnswer(error)
        }
    }

    /// Decides `request` in whichever store the service runs on; a store failure is a
    /// 503 (`storeError`).
    func decide(_ request: AdmissionRequest) async throws(APIError) -> Decision {
        guard let shared = sharedStore else { return memoryStore.acquire(request) }
        do {
            return try await shared.acquire(request)
        } catch {
            throw storeError(error)
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
        let catalogue = limiter.catalogue
        let resolution: Resolution
        do {
            resolution = try catalogue.resolve(
                account: WeirService.profile(id: account, catalogue: catalogue, registry: registry), api: api, model: model)
        } catch {
            throw Self.apiError(error)
        }
        return PreparedAcquire(
            request: AdmissionRequest(key: resolution.key, limits: resolution.limits, units: units, leaseTTL: ttl),
            resolution: resolution, model: model, started: started)
    }

    /// The answer to a prepared request given the store's decision; records the metrics.
    func answer(_ prepared: PreparedAcquire, decision: Decision) -> DecisionAnswer {
        let resolution = prepared.resolution
        let limited = LimitedDecision(decision: decision, resolution: resolution, units: prepared.request.units)
        record(decision, resolution: resolution, model: prepared.model)

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
        metrics.latency.recordNanoseconds(Int64(clamping: SystemClock().now() &- prepared.started))
        return DecisionAnswer(
            status: decision.isAllowed ? .ok : .tooManyRequests, rateLimits: .decision(limited), body: json.bytes)
    }

    /// `{"lease", "units"}` -> 200 `{"lease", "charged", "refunded", "limits"}`;
    /// 404 for a lease never issued, 409 for one settled already or expired.
    ///
    /// Synchronous: only with the in-memory store (`sharedStore == nil`).
    func settle(_ body: [UInt8]) -> DecisionAnswer {
        do throws(APIError) {
            let (lease, units) = try parseSettle(body)
            let settlement: Settlement
            do {
                settlement = try memoryStore.settle(lease, actualUnits: units)
            } catch {
                throw Self.apiError(error)
            }
            return answer(lease, settlement)
        } catch {
            return DecisionAnswer(error)
        }
    }

    /// `settle(_:)` through whichever store the service runs on.
    func settleAsync(_ body: [UInt8]) async -> DecisionAnswer {
        guard let shared = sharedStore else { return settle(body) }
        do {
            let (lease, units) = try parseSettle(body)
            let settlement: Settlement
            do {
                settlement = try await shared.settle(lease, actualUnits: units)
            } catch let error as LeaseError {
                throw Self.apiError(error)
            } catch {
                throw storeError(error)
            }
            return answer(lease, settlement)
        } catch let error as APIError {
            return DecisionAnswer(error)
        } catch {
            return DecisionAnswer(storeError(error))
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

    private func answer(_ lease: LeaseID, _ settlement: Settlement) -> DecisionAnswer {
        let settled = SettledLease(settlement: settlement)
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
