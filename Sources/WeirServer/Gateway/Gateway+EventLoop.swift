import AsyncHTTPClient
import Foundation
import HTTPTypes
import NIOCore
import NIOHTTP1

/// A gateway call's upstream exchange, on the client connection's event loop:
/// `DecisionFastPath` prepares, decides and admits a call (`prepare`, `admit`), then
/// sends it here with AsyncHTTPClient's delegate API (`UpstreamExchange`) on its own
/// event loop, so that the upstream exchange and the answer never leave that thread.
extension Gateway {
    /// What a call ends with.
    enum Outcome {
        /// The upstream's response read whole, and its headers for the client (rate
        /// limit headers not yet added).
        case upstream(UpstreamResponse, headers: HTTPFields)
        /// An answer of the gateway's own (the exchange failed before a response).
        case failed(GatewayAnswer)
        /// A stream relayed to the client ended: `rest` (what followed its last complete
        /// event) goes after the events, then the response ends.
        case streamed(rest: ByteBuffer)
        /// A stream relayed to the client was cut short (upstream reset, silence, client
        /// gone): the response must end abruptly, so the client sees it incomplete.
        case cut
    }

    /// Sends an admitted call to the upstream (`uri`, the request's `headers` less
    /// hop-by-hop ones), settles its lease from the response, whatever happens, and
    /// calls `completion` with the outcome, on `loop` (one callback on AsyncHTTPClient's
    /// future: no futures chained per call). With a `sink`, a stream the upstream answers
    /// is relayed to it as it comes (the call asked for one); else every response is read
    /// whole. Returns the exchange's task (to cancel when the client goes away), or nil
    /// when the call ended at once.
    @discardableResult
    func send(
        _ call: AdmittedCall, uri: String, headers: HTTPHeaders, dialect: GatewayRoute.Dialect, on loop: any EventLoop,
        sink: UpstreamExchange.Sink?, completion: @escaping (Outcome) -> Void
    ) -> HTTPClient.Task<UpstreamExchange.Response>? {
        var request = routeRequests[uri]
        if request == nil, uri.contains("?") {
            // A path of the table with a query: the same call, the query passed on.
            request = URL(string: base + uri).flatMap { try? HTTPClient.Request(url: $0, method: .POST, tlsConfiguration: nil) }
        }
        guard var request else {
            completion(.failed(GatewayErrors.response(failed(call, HTTPClientError.invalidURL), dialect: dialect)))
            return nil
        }
        request.headers = forwardedHeaders(headers)
        request.body = .byteBuffer(ByteBuffer(bytes: call.forwarded))
        let exchange = UpstreamExchange(
            limit: configuration.maxResponseSize, timeout: .nanoseconds(Int64(clamping: configuration.timeout)), sink: sink,
            call: call)
        let task = client.execute(request: request, delegate: exchange, eventLoop: .delegate(on: loop))
        exchange.watch(task, on: loop)
        let completion = NIOLoopBound(completion, eventLoop: loop)
        task.futureResult.hop(to: loop).whenComplete { result in
            switch result {
            case .success(.whole(let response)):
                completion.value(self.outcome(of: response, call: call))
            case .success(.relayed(let rest)):
                call.lease?.settle(exchange.meter.completedUnits)
                completion.value(.streamed(rest: rest))
            case .failure where exchange.isRelaying:
                call.lease?.settle(exchange.meter.interruptedUnits)
                completion.value(.cut)
            case .failure(let error):
                completion.value(.failed(GatewayErrors.response(self.failed(call, error), dialect: dialect)))
            }
        }
        return task
    }

    /// Settles a call from its whole upstream response and gives the answer's parts.
    private func outcome(of response: UpstreamResponse, call: AdmittedCall) -> Outcome {
        var response = response
        if Self.isEventStream(response.head.headers) && response.head.status.code < 400 {
            // A stream the client did not ask for, read whole: its usage read event by
            // event, as a relayed stream's.
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
