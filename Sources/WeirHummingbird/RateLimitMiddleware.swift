import HTTPTypes
import Hummingbird
import WeirAnswers
import WeirCore
import WeirPolicy

/// What one request costs, and whose budget it draws on.
public struct RateLimitSubject: Sendable, Hashable {
    /// The account the request is charged to.
    public var account: String
    /// The API (`text`, `t2a`, ...) and model the request calls.
    public var api: String
    public var model: String
    /// The estimated cost on the rule's meter (tokens, characters, images); 0 for none.
    public var units: UInt64
    /// How long the request may wait for room instead of a 429, in nanoseconds; nil
    /// for the rule's `max_wait` (none by default). Waiting needs a `Limiter` made with
    /// `waiting:`; without one, every request is answered at once.
    public var maxWait: UInt64?

    public init(account: String, api: String, model: String, units: UInt64 = 0, maxWait: UInt64? = nil) {
        self.account = account
        self.api = api
        self.model = model
        self.units = units
        self.maxWait = maxWait
    }
}

/// Enforces Weir's limits in process, in front of a Hummingbird route.
///
/// For each request, `subject` says who it is charged to and what it costs (nil lets it
/// through unlimited). A denied request is answered here: HTTP 429, the rate limit
/// headers, `Retry-After`, and an OpenAI-style error body
/// (`{"error": {"message", "type", "code": "rate_limit_exceeded"}}`). An allowed request
/// goes on with a lease; its response gets the headers, and the lease is settled with
/// the same units once the handler returns (or throws), which frees its concurrency
/// slot. A request whose (API, model) the catalogue does not serve is answered 400.
///
/// The slot is freed when the handler returns its response: a streamed body that goes
/// on after that no longer holds it.
///
/// A request that may wait (`RateLimitSubject.maxWait`, or its rule's `max_wait`) and
/// would be refused waits for room first (`Limiter`'s waiting); if its task is cancelled
/// meanwhile (the client went away), it stops waiting and holds nothing.
public struct RateLimitMiddleware<Context: RequestContext>: RouterMiddleware {
    private let limiter: Limiter
    private let leaseTTL: UInt64
    private let subject: @Sendable (Request, Context) async throws -> RateLimitSubject?

    /// - Parameters:
    ///   - limiter: the catalogue and store to decide with.
    ///   - leaseTTL: how long an unsettled lease holds its slot, in nanoseconds.
    ///   - subject: maps a request to its account, API, model and units; nil for none.
    public init(
        limiter: Limiter,
        leaseTTL: UInt64 = AdmissionRequest.defaultLeaseTTL,
        subject: @escaping @Sendable (Request, Context) async throws -> RateLimitSubject?
    ) {
        self.limiter = limiter
        self.leaseTTL = leaseTTL
        self.subject = subject
    }

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard let subject = try await subject(request, context) else {
            return try await next(request, context)
        }
        let resolution: Resolution
        do {
            resolution = try limiter.resolve(account: subject.account, api: subject.api, model: subject.model)
        } catch {
            return Self.errorResponse(
                status: .badRequest, headers: HTTPFields(), message: error.description, type: "invalid_request_error",
                code: "invalid_model")
        }
        let limited = try await decide(resolution, subject: subject)
        if limited.isDenied {
            return Self.errorResponse(
                status: .tooManyRequests, headers: limited.headers, message: limited.message ?? "rate limit exceeded",
                type: limited.decision.reason?.rawValue ?? "requests", code: "rate_limit_exceeded")
        }
        let response: Response
        do {
            response = try await next(request, context)
        } catch {
            await settle(limited, units: subject.units)
            throw error
        }
        await settle(limited, units: subject.units)
        var answered = response
        limited.addHeaders(to: &answered.headers)
        return answered
    }

    /// The decision for `subject`: at once, or after waiting for room when it may wait.
    ///
    /// - Throws: the store's errors; `CancellationError` when the task was cancelled
    ///   while it waited.
    private func decide(_ resolution: Resolution, subject: RateLimitSubject) async throws -> LimitedDecision {
        let maxWait = subject.maxWait ?? resolution.rule.maxWait ?? 0
        guard maxWait > 0 else {
            return try await limiter.decide(resolution, units: subject.units, leaseTTL: leaseTTL, model: subject.model)
        }
        let cancellation = WaitCancellation()
        let result = await withTaskCancellationHandler {
            await limiter.acquire(
                resolution, units: subject.units, leaseTTL: leaseTTL, model: subject.model, maxWait: maxWait,
                cancellation: cancellation
            ).value
        } onCancel: {
            cancellation.cancel()
        }
        do {
            return try result.get()
        } catch is WaitCancelled {
            throw CancellationError()
        }
    }

    private func settle(_ limited: LimitedDecision, units: UInt64) async {
        guard let lease = limited.decision.lease else { return }
        // A lease can only fail to settle by having expired (its slot is free then) or
        // by a store failure, which the request's own answer must not turn into an error.
        _ = try? await limiter.settled(lease.id, actualUnits: units)
    }

    static func errorResponse(
        status: HTTPResponse.Status, headers: HTTPFields, message: String, type: String, code: String
    ) -> Response {
        var json = JSONWriter()
        json.beginObject()
        json.key("error")
        json.beginObject()
        json.field("message", message)
        json.field("type", type)
        json.field("code", code)
        json.endObject()
        json.endObject()
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(string: json.text)))
    }
}
