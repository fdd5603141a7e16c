import HTTPTypes
import Hummingbird
import WeirAnswers

/// An answer other than a decision: bad input, bad credentials, unknown leases.
///
/// The body is `{"error": {"code", "message", "field"?}}`; errors of the MiniMax
/// platform's own vocabulary (an unknown API key: code 1004) also carry its envelope,
/// `{"base_resp": {"status_code", "status_msg"}}`. Messages never contain API keys.
struct APIError: Error, HTTPResponseError, CustomStringConvertible {
    var status: HTTPResponse.Status
    /// A stable, machine-readable code (`invalid_request`, `unknown_lease`, ...).
    var code: String
    var message: String
    /// The request field at fault, when one is.
    var field: String?
    /// The MiniMax `base_resp.status_code`, when the error has one.
    var miniMaxCode: Int?
    /// More detail as raw JSON (e.g. the list of config errors), under `error.details`.
    var detailsJSON: String?

    var description: String { message }

    static func badRequest(field: String, _ problem: String) -> APIError {
        APIError(status: .badRequest, code: "invalid_request", message: "\(field): \(problem)", field: field)
    }

    static func unknownAPIKey() -> APIError {
        APIError(
            status: .unauthorized, code: "invalid_api_key",
            message: "invalid api key: no account has this key (it may have been revoked)",
            field: "api_key", miniMaxCode: 1004)
    }

    static func bodyTooLarge(limit: Int) -> APIError {
        APIError(
            status: .contentTooLarge, code: "body_too_large",
            message: "body: larger than the limit of \(limit) bytes", field: "body")
    }

    var json: String {
        var json = JSONWriter()
        json.beginObject()
        if let miniMaxCode {
            json.key("base_resp")
            json.beginObject()
            json.key("status_code")
            json.integer(miniMaxCode)
            json.field("status_msg", message)
            json.endObject()
        }
        json.key("error")
        json.beginObject()
        json.field("code", code)
        json.field("message", message)
        if let field { json.field("field", field) }
        if let detailsJSON {
            json.key("details")
            json.raw(detailsJSON)
        }
        json.endObject()
        json.endObject()
        return json.text
    }

    /// The error as an answer; a 503 says when to come back (`Retry-After: 1`), as the
    /// decision API's own 503s do.
    func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = HTTPFields()
        if status == .serviceUnavailable { headers[.retryAfter] = "1" }
        return Response.json(status: status, json, headers: headers)
    }
}

extension Response {
    /// A JSON response with `text` as its body.
    static func json(status: HTTPResponse.Status, _ text: String, headers: HTTPFields = HTTPFields()) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}
