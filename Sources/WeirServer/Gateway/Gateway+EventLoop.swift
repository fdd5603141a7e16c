import AsyncHTTPClient
import Foundation
import HTTPTypes
import NIOCore
import NIOHTTP1

/// The gateway's non-streaming calls on the event loop: `DecisionFastPath` prepares,
/// decides (in-memory store) and admits a call with the same steps as the Hummingbird
/// route (`prepare`, `admit`), then sends it here with AsyncHTTPClient's
/// delegate API on the client connection's own event loop, so that the upstream
/// exchange and the answer never leave that thread.
extension Gateway {
    /// What a call ends with: the upstream's response, its headers for the client
    /// (rate limit headers not yet added) and the body to send; or an error answer.
    enum Outcome {
        case upstream(UpstreamResponse, headers: HTTPFields)
        case failed(GatewayAnswer)
    }

    /// Sends an admitted call to the upstream (`path`, the request's `headers` less
    /// hop-by-hop ones), settles its lease from the response, whatever happens, and
    /// calls `completion` with the outcome, on `loop` (one callback on AsyncHTTPClient's
    /// future: no futures chained per call).
    func send(
        _ call: AdmittedCall, path: String, headers: HTTPHeaders, dialect: GatewayRoute.Dialect, on loop: any EventLoop,
        completion: @escaping (Outcome) -> Void
    ) {
        guard var request = routeRequests[path] else {
            let error = failed(call, HTTPClientError.invalidURL)
            completion(.failed(GatewayErrors.response(error, dialect: dialect)))
            return
        }
        request.headers = forwardedHeaders(headers)
        request.body = .byteBuffer(ByteBuffer(bytes: call.forwarded))
        let task = eventLoopClient.execute(
            request: request, delegate: UpstreamCollector(limit: configuration.maxResponseSize),
            eventLoop: .delegate(on: loop),
            deadline: .now() + .nanoseconds(Int64(clamping: configuration.timeout)))
        let completion = NIOLoopBound(completion, eventLoop: loop)
        task.futureResult.hop(to: loop).whenComplete { result in
            switch result {
            case .success(let response):
                completion.value(self.outcome(of: response, call: call))
            case .failure(let error):
                completion.value(.failed(GatewayErrors.response(self.failed(call, error), dialect: dialect)))
            }
        }
    }

    /// Settles a call from its upstream response and gives the answer's parts.
    private func outcome(of response: UpstreamResponse, call: AdmittedCall) -> Outcome {
        var response = response
        if Self.isEventStream(response.head.headers) && response.head.status.code < 400 {
            // A stream the client did not ask for, read whole: its usage as the
            // streaming route reads it, event by event.
            var meter = call.meter
            var parser = SSEParser()
            var out = ByteBuffer()
            Self.pass(parser.feed(response.body.readableBytesView), into: &out, meter: &meter, stripUsage: call.stripUsage)
            out.writeBytes(parser.pendingBytes)
            call.lease?.settle(meter.completedUnits)
            response.body = out
        } else {
            settle(call, statusCode: Int(response.head.status.code), body: response.body)
        }
        return .upstream(response, headers: responseHeaders(response.head.headers))
    }
}
