import HTTPTypes
import Hummingbird

/// An answer the gateway gives itself: a status, headers (the rate limit headers of a
/// denial) and a JSON body. `Content-Type: application/json` is implied.
struct GatewayAnswer: Sendable {
    var status: HTTPResponse.Status
    var headers = HTTPFields()
    var body: String

    /// The answer for a Hummingbird route (`--forward-unknown`'s).
    var response: Response { Response.json(status: status, body, headers: headers) }
}
