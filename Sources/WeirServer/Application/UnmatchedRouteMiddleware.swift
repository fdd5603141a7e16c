import HTTPTypes
import Hummingbird

/// Answers a request that no route takes with the API's `Error` body rather than
/// the framework's empty 404: 405 `method_not_allowed` with `Allow` when the API's
/// contract (`APIContract`) has the path with other methods, else 404 `not_found`.
///
/// It sees exactly the router's own "no route" (an `HTTPError` with status 404, which
/// Hummingbird throws from its not-found responder); a route's own 404s are `APIError`s
/// (`unknown_account`, `unknown_lease`, ...) and pass through unchanged.
///
/// Concurrency: stateless; safe from any task.
struct UnmatchedRouteMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            let path = request.uri.path
            if let methods = APIContract.methods(forPath: path), !methods.contains(request.method.rawValue) {
                let error = APIError(
                    status: .methodNotAllowed, code: "method_not_allowed",
                    message: "\(request.method.rawValue) \(path): this path takes \(methods.joined(separator: ", "))")
                var headers = HTTPFields()
                headers[.allow] = methods.joined(separator: ", ")
                return Response.json(status: .methodNotAllowed, error.json, headers: headers)
            }
            throw APIError(
                status: .notFound, code: "not_found",
                message: "no route for \(request.method.rawValue) \(path) (the API is described at GET /openapi.json)")
        }
    }
}
