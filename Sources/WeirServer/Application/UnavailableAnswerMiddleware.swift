import Hummingbird
import Logging
import WeirCore

/// The last line of "never a 500": an error that is not an answer already (an
/// `HTTPResponseError` such as `APIError`) comes from a dependency (the registry's
/// SQLite or Redis, or the rate limit store) failing under a call. The caller gets 503
/// with `Retry-After: 1` and the `Error` body of the API's contract (`store_unavailable`
/// for the store, `unavailable` for anything else); the error itself goes to the log,
/// never to the caller.
///
/// Concurrency: stateless; safe from any task.
struct UnavailableAnswerMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as any HTTPResponseError {
            throw error
        } catch let error as StoreError {
            logger.warning("store failure", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            throw APIError(
                status: .serviceUnavailable, code: "store_unavailable",
                message: "the rate limit store is unavailable; retry shortly")
        } catch {
            logger.error("dependency failure", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            throw APIError(
                status: .serviceUnavailable, code: "unavailable",
                message: "a dependency of weir serve (the registry or the store) failed; retry shortly")
        }
    }
}
