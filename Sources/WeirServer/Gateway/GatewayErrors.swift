import HTTPTypes
import Hummingbird
import WeirCore
import WeirPolicy
import WeirAnswers

/// The answers the gateway gives itself (denials and errors), in the words of the
/// path's API:
///
/// - MiniMax paths: `{"base_resp": {"status_code", "status_msg"}, "error": {...}}`,
///   status codes 1002 (rate limited), 1004 (authentication), 2013 (invalid input),
///   1001 (upstream timeout), 1000 (other upstream failures);
/// - `/v1/chat/completions`: OpenAI's `{"error": {"message", "type", "param", "code"}}`,
///   which the official clients turn into `RateLimitError`, `AuthenticationError`,
///   `BadRequestError` and so on. On a denial, `code` is `rate_limit_exceeded` and
///   `type` the dimension that refused (`requests`, `tokens`, `concurrency`).
///
/// Denials carry the rate limit headers of the decision API (`Retry-After` included).
/// Each answer is a `GatewayAnswer`, which `DecisionFastPath` writes as HTTP/1.1 bytes
/// (and `--forward-unknown`'s Hummingbird route sends as a `Response`).
enum GatewayErrors {
    /// HTTP 429 for a refused call.
    static func denied(_ limited: LimitedDecision, dialect: GatewayRoute.Dialect) -> GatewayAnswer {
        let message = limited.message ?? "rate limit exceeded"
        let reason = limited.decision.reason ?? .requests
        let type = reason == .tooLarge ? "tokens" : reason.rawValue
        var json = JSONWriter(capacity: 512)
        json.beginObject()
        if dialect == .miniMax {
            json.key("base_resp")
            json.beginObject()
            json.key("status_code")
            json.integer(1002)
            json.field("status_msg", message)
            json.endObject()
        }
        json.key("error")
        json.beginObject()
        json.field("message", message)
        json.field("type", type)
        if dialect == .openAI {
            json.key("param")
            json.null()
        }
        json.field("code", "rate_limit_exceeded")
        json.field("reason", reason.rawValue)
        json.field("retry_after_ms", optional: limited.decision.retryAfter.map(Nanoseconds.millisecondsRoundedUp))
        json.endObject()
        json.endObject()
        return GatewayAnswer(status: .tooManyRequests, headers: limited.headers, body: json.text)
    }

    /// An error answer (bad input, bad key, upstream failure) in the path's dialect.
    static func response(_ error: APIError, dialect: GatewayRoute.Dialect) -> GatewayAnswer {
        switch dialect {
        case .miniMax:
            var error = error
            if error.miniMaxCode == nil { error.miniMaxCode = miniMaxCode(error.status) }
            return GatewayAnswer(status: error.status, body: error.json)
        case .openAI:
            var json = JSONWriter(capacity: 256)
            json.beginObject()
            json.key("error")
            json.beginObject()
            json.field("message", error.message)
            json.field("type", error.status.code >= 500 ? "api_error" : "invalid_request_error")
            json.field("param", optional: error.field)
            json.field("code", error.code)
            json.endObject()
            json.endObject()
            return GatewayAnswer(status: error.status, body: json.text)
        }
    }

    static func miniMaxCode(_ status: HTTPResponse.Status) -> Int {
        switch status.code {
        case 401: 1004
        case 429: 1002
        case 504: 1001
        case 500...: 1000
        default: 2013
        }
    }

    static func missingAPIKey() -> APIError {
        APIError(
            status: .unauthorized, code: "invalid_api_key",
            message: "missing api key: send Authorization: Bearer <api key>", field: "authorization", miniMaxCode: 1004)
    }

    static func upstreamTimeout(_ seconds: String) -> APIError {
        APIError(
            status: .gatewayTimeout, code: "upstream_timeout",
            message: "the upstream did not answer within \(seconds)", miniMaxCode: 1001)
    }

    static func upstreamFailed(_ detail: String) -> APIError {
        APIError(status: .badGateway, code: "upstream_unavailable", message: "the upstream failed: \(detail)", miniMaxCode: 1000)
    }
}
