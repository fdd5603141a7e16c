import AsyncHTTPClient
import NIOCore
import NIOHTTP1

/// A whole upstream response: its head and its body.
struct UpstreamResponse: Sendable {
    var head: HTTPResponseHead
    var body: ByteBuffer
}

/// An AsyncHTTPClient delegate that reads one upstream response whole, up to `limit`
/// bytes of body, for the gateway's non-streaming calls on the event loop
/// (`DecisionFastPath`).
///
/// A body over `limit` fails the request with `Gateway.ResponseTooLarge` (the client
/// stops reading and closes the connection); any other failure is AsyncHTTPClient's.
///
/// Concurrency: AsyncHTTPClient calls a delegate on one event loop only (the one given
/// with `.delegate(on:)`), one call at a time, so the state needs no lock.
final class UpstreamCollector: HTTPClientResponseDelegate, @unchecked Sendable {
    typealias Response = UpstreamResponse

    private let limit: Int
    private var head: HTTPResponseHead?
    private var body = ByteBuffer()

    /// - Parameter limit: the most body bytes accepted.
    init(limit: Int) {
        self.limit = limit
    }

    func didReceiveHead(task: HTTPClient.Task<Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        self.head = head
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Response>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        guard body.readableBytes + buffer.readableBytes <= limit else {
            return task.eventLoop.makeFailedFuture(Gateway.ResponseTooLarge())
        }
        var buffer = buffer
        body.writeBuffer(&buffer)
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveError(task: HTTPClient.Task<Response>, _ error: any Error) {}

    func didFinishRequest(task: HTTPClient.Task<Response>) throws -> Response {
        guard let head else { throw HTTPClientError.remoteConnectionClosed }
        return UpstreamResponse(head: head, body: body)
    }
}
