import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import WeirCore
import WeirAnswers
import WeirPolicy

/// `weir serve --upstream URL`: the model API's paths (DESIGN.md, "Gateway paths"),
/// limited per account and forwarded to the upstream.
///
/// Per call: the `Authorization: Bearer` key gives the account (registry, then the
/// config's key hashes), the path the API, the body's `model` the model. The units are
/// estimated (`UsageEstimate`) and acquired with a lease; a refusal is answered 429 at
/// once, without touching the upstream (`GatewayErrors`). An admitted call is
/// forwarded, and its response comes back with the decision's rate limit headers:
///
/// - **non-streaming**: the body is read whole (up to `maxResponseSize`), its usage
///   read (`usage.total_tokens`, `extra_info.usage_characters`,
///   `metadata.success_count`), the lease settled, then the body sent;
/// - **streaming** (`text/event-stream`): each event is forwarded as soon as it is
///   complete, its usage read as it goes by, the lease settled when the stream ends.
///   On `/v1/chat/completions`, a streaming request that did not ask for usage gets
///   `stream_options.include_usage` added, and the usage-only chunk this produces is
///   removed from what the client sees.
///
/// **Every call settles its lease**, whatever happens, so its concurrency slot is free
/// at once: reported usage when the upstream reports it; an error response (4xx, 5xx,
/// or a MiniMax `base_resp.status_code` other than 0) without usage, 0; no response
/// at all, 0 when the connection could not be made, else the estimate (the upstream may
/// have done the work); a stream cut short (upstream reset or timeout, client gone),
/// the input estimate plus the output streamed so far. `GatewayLease` settles in its
/// `deinit` if a response is dropped before its body runs.
///
/// Headers: hop-by-hop headers (RFC 9110 7.6.1: `Connection` and those it names,
/// `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) are not
/// forwarded either way; `Host` and `Content-Length` are set for the upstream;
/// `Accept-Encoding` is dropped so that the usage can be read; the upstream's own
/// `x-ratelimit-*` / `RateLimit*` headers are replaced by Weir's.
///
/// **One way in.** Every call on a path of the table, streaming or not, is served by
/// `DecisionFastPath` on the client connection's event loop: `prepare`, the limiter's
/// decision, `admit`, then `send` (`Gateway+EventLoop.swift`), which relays a stream or
/// reads a response whole and settles. Only `--forward-unknown` goes through a
/// Hummingbird route (`forwardUnknown`), on the same client.
///
/// Concurrency: thread-safe; one instance per application, shared by every request.
final class Gateway: Sendable {
    let service: WeirService
    let configuration: GatewayConfiguration
    /// The one upstream client: at most `maxConnections` connections. No read timeout of
    /// its own: `--upstream-timeout` (the longest silence of the upstream) is kept by one
    /// timer per exchange (`UpstreamExchange`, and `forwardUnknown`) rather than the
    /// three timers per call AsyncHTTPClient's read timeout arms (when the request is
    /// sent, at the head, at each body part).
    let client: HTTPClient
    /// The upstream URL without a trailing `/`; a call goes to `base + path`.
    let base: String
    /// A `POST` to `base + path` for each path of the table, its URL parsed and broken
    /// down once: a call copies it and sets its headers and body
    /// (`Gateway+EventLoop.swift`). Missing when the URL is not one AsyncHTTPClient takes.
    let routeRequests: [String: HTTPClient.Request]
    private let timeoutText: String

    init(service: WeirService, configuration: GatewayConfiguration, eventLoopGroup: any EventLoopGroup) {
        self.service = service
        self.configuration = configuration
        var base = configuration.upstream.absoluteString
        while base.hasSuffix("/") { base.removeLast() }
        self.base = base
        var routeRequests: [String: HTTPClient.Request] = [:]
        for route in GatewayRoute.all {
            routeRequests[route.path] = URL(string: base + route.path).flatMap {
                try? HTTPClient.Request(url: $0, method: .POST, tlsConfiguration: nil)
            }
        }
        self.routeRequests = routeRequests
        var timeoutBytes: [UInt8] = []
        GoDuration.append(nanoseconds: configuration.timeout, to: &timeoutBytes)
        self.timeoutText = String(decoding: timeoutBytes, as: UTF8.self)
        let timeout = TimeAmount.nanoseconds(Int64(clamping: configuration.timeout))
        var clientConfiguration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: HTTPClient.Configuration.Timeout(connect: min(timeout, .seconds(10)), read: nil),
            connectionPool: HTTPClient.Configuration.ConnectionPool(
                idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: configuration.maxConnections),
            decompression: .disabled)
        clientConfiguration.httpVersion = .http1Only
        // A refused connection is answered 502 at once rather than retried until the
        // connect timeout: the client can retry, and its slot is free meanwhile.
        clientConfiguration.connectionPool.retryConnectionEstablishment = false
        // Weir exports no traces: a span per upstream call (attributes built from the
        // URL, which is parsed again for them) would be work per request for nothing.
        clientConfiguration.tracing.tracer = nil
        // A request's head and body leave in one write rather than two.
        clientConfiguration.http1_1ConnectionDebugInitializer = { RequestFlushCoalescer.install(on: $0) }
        self.client = HTTPClient(eventLoopGroup: eventLoopGroup, configuration: clientConfiguration)
    }

    // MARK: - Routes

    /// With `--forward-unknown`, every path outside the table (the table's own are
    /// `DecisionFastPath`'s).
    func addRoutes(to router: Router<BasicRequestContext>) {
        guard configuration.forwardUnknown else { return }
        let methods: [HTTPRequest.Method] = [.get, .post, .put, .delete, .patch, .head, .options]
        for method in methods {
            router.on("**", method: method) { request, _ in try await self.forwardUnknown(request) }
        }
    }

    // MARK: - The steps of a call

    /// A call on a path of the table, identified, parsed and resolved; not decided yet.
    struct PreparedCall: Sendable {
        var route: GatewayRoute
        var bytes: [UInt8]
        var body: JSONValue
        var model: String
        /// Whether the client asked for a stream (`stream: true`).
        var streaming: Bool
        var resolution: Resolution
        var estimate: UsageEstimate
        /// How long the caller waits for room rather than be refused (nanoseconds; 0:
        /// not at all), from `maxWaitHeader`.
        var maxWait: UInt64 = 0
    }

    /// The request header with which a caller asks to wait for room instead of a 429,
    /// in milliseconds (as `max_wait_ms` on `/v1/acquire`; without it, the rule's
    /// `max_wait`); not forwarded upstream.
    static let maxWaitHeader = "x-weir-max-wait-ms"

    /// An admitted call: what goes upstream, and how its lease is settled.
    struct AdmittedCall: Sendable {
        var limited: LimitedDecision
        var lease: GatewayLease?
        var meter: UsageMeter
        /// The body for the upstream (with `stream_options.include_usage` added when
        /// the gateway asks for usage itself).
        var forwarded: [UInt8]
        /// Whether the usage-only chunk is the gateway's, to be kept from the client.
        var stripUsage: Bool
        /// Whether the client asked for a stream (one the upstream answers is relayed).
        var streaming: Bool

        var estimate: UInt64 { meter.estimate.total }
    }

    /// What a decision makes of a call.
    enum Admission {
        case admitted(AdmittedCall)
        /// The 429 to answer.
        case denied(GatewayAnswer)
    }

    /// The upstream's body was larger than `maxResponseSize`.
    struct ResponseTooLarge: Error {}

    /// Identifies the caller (`authorization` is the header's value), parses the body
    /// and resolves its rule: everything before the decision, synchronous.
    ///
    /// - Throws: `APIError` (401 for a missing or unknown key, 400 naming the field, 404
    ///   for an unknown model).
    func prepare(
        authorization: String?, bytes: [UInt8], route: GatewayRoute, maxWait: String? = nil
    ) throws(APIError) -> PreparedCall {
        let account = try identify(authorization: authorization)
        let wait = try maxWait.map { value throws(APIError) in try waitBound(value) }
        let body = try WeirService.parseObject(bytes)
        let model = route.modelFromBody ? try JSONValue.string(body["model"], "model") : ""
        let streaming: Bool
        switch body["stream"] {
        case nil, .null?, .bool(false)?: streaming = false
        case .bool(true)?: streaming = true
        case let other?: throw APIError.badRequest(field: "stream", "must be a boolean, got \(other.kind)")
        }
        let resolution: Resolution
        do {
            resolution = try service.limiter.resolve(account: account, api: route.api, model: model)
        } catch {
            throw WeirService.apiError(error)
        }
        let estimate = try UsageEstimate.of(body, metering: route.metering, rule: resolution.rule)
        return PreparedCall(
            route: route, bytes: bytes, body: body, model: model, streaming: streaming, resolution: resolution,
            estimate: estimate, maxWait: wait ?? service.ruleWait(resolution))
    }

    /// The `x-weir-max-wait-ms` value in nanoseconds: a whole number of milliseconds,
    /// at most the server's `--max-wait-ms`.
    private func waitBound(_ value: String) throws(APIError) -> UInt64 {
        guard let milliseconds = UInt64(value.trimmingCharacters(in: .whitespaces)) else {
            throw APIError.badRequest(field: Self.maxWaitHeader, "must be a whole number of milliseconds, got \(value)")
        }
        return try service.waitBound(milliseconds: milliseconds, field: Self.maxWaitHeader)
    }

    /// Gives the denial to answer, or the admitted call with its lease and the body for
    /// the upstream.
    func admit(_ call: PreparedCall, decision limited: LimitedDecision) -> Admission {
        let decision = limited.decision
        guard decision.isAllowed else { return .denied(GatewayErrors.denied(limited, dialect: call.route.dialect)) }
        let lease = decision.lease.map { GatewayLease(id: $0.id, service: service, fallbackUnits: call.estimate.total) }
        var forwarded = call.bytes
        var stripUsage = false
        let body = call.body
        if call.route.dialect == .openAI, call.streaming, body["stream_options"]?["include_usage"] != .bool(true) {
            let options = (body["stream_options"].flatMap { $0.setting("include_usage", to: .bool(true)) })
                ?? .object([("include_usage", .bool(true))])
            if let rewritten = body.setting("stream_options", to: options) {
                forwarded = rewritten.serialized
                stripUsage = true
            }
        }
        return .admitted(AdmittedCall(
            limited: limited, lease: lease, meter: UsageMeter(metering: call.route.metering, estimate: call.estimate),
            forwarded: forwarded, stripUsage: stripUsage, streaming: call.streaming))
    }

    /// Settles a call whose whole response body was read: with the usage it reports;
    /// an error (4xx, 5xx, a MiniMax `base_resp.status_code` other than 0) without
    /// usage, 0.
    func settle(_ call: AdmittedCall, statusCode: Int, body: ByteBuffer) {
        var usage = call.meter
        var failed = statusCode >= 400
        if let document = try? JSONParser.parse(Array(body.readableBytesView)) {
            usage.observe(document)
            if let code = document["base_resp"]?["status_code"], code != .number("0"), code != .null { failed = true }
        }
        call.lease?.settle(failed ? (usage.reported ?? 0) : usage.completedUnits)
    }

    /// Settles a call whose upstream exchange failed (0 when the request never left,
    /// else the estimate) and gives the error to answer.
    func failed(_ call: AdmittedCall, _ error: any Error) -> APIError {
        if error is ResponseTooLarge {
            call.lease?.settle(call.estimate)
            return GatewayErrors.upstreamFailed("response larger than \(configuration.maxResponseSize) bytes")
        }
        call.lease?.settle(Self.neverSent(error) ? 0 : call.estimate)
        return upstreamError(error)
    }

    /// Whether a response is a stream of server-sent events.
    static func isEventStream(_ headers: HTTPHeaders) -> Bool {
        headers.first(name: "content-type")?.lowercased().hasPrefix("text/event-stream") ?? false
    }

    /// Passes `events` into `out`, reading usage into `meter` as they go by and leaving
    /// out the usage-only chunk when `stripUsage`.
    static func pass(_ events: [SSEParser.Event], into out: inout ByteBuffer, meter: inout UsageMeter, stripUsage: Bool) {
        for event in events {
            var keep = true
            if let data = event.data, !data.elementsEqual(doneMarker), let document = try? JSONParser.parse(data) {
                meter.observe(document)
                if stripUsage, isUsageOnly(document) { keep = false }
            }
            if keep { out.writeBytes(event.raw) }
        }
    }

    private static let doneMarker: [UInt8] = Array("[DONE]".utf8)

    /// A chunk only there because the gateway asked for usage: usage and no choices.
    static func isUsageOnly(_ document: JSONValue) -> Bool {
        guard let usage = document["usage"], usage != .null else { return false }
        switch document["choices"] {
        case nil, .null?: return true
        case .array(let choices)?: return choices.isEmpty
        default: return false
        }
    }

    // MARK: - Identity

    /// The account of the `Authorization: Bearer` key (401 when missing or unknown).
    private func identify(authorization: String?) throws(APIError) -> String {
        guard let authorization, let key = Self.bearerToken(authorization) else {
            throw GatewayErrors.missingAPIKey()
        }
        guard let account = service.account(forAPIKey: key) else { throw APIError.unknownAPIKey() }
        return account
    }

    /// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive,
    /// the token trimmed of spaces and tabs, Unicode space separators included), or nil
    /// when the value has another scheme or no token. Works on the UTF-8 bytes: no
    /// Foundation, no lowercased copies.
    static func bearerToken(_ value: String) -> String? {
        var utf8 = Substring(value).utf8
        // The scheme: after leading spaces, up to the next space.
        while utf8.first == UInt8(ascii: " ") { utf8.removeFirst() }
        let scheme = utf8.prefix { $0 != UInt8(ascii: " ") }
        guard scheme.count == 6,
            zip(scheme, "bearer".utf8).allSatisfy({ $0 | 0x20 == $1 })
        else { return nil }
        utf8.removeFirst(6)
        while utf8.first == UInt8(ascii: " ") { utf8.removeFirst() }
        // An ASCII token (the usual case): only spaces and tabs to trim, byte by byte.
        if utf8.allSatisfy({ $0 < 0x80 }) {
            let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
            while let first = utf8.first, isBlank(first) { utf8.removeFirst() }
            while let last = utf8.last, isBlank(last) { utf8.removeLast() }
            return utf8.isEmpty ? nil : String(Substring(utf8))
        }
        // The token, trimmed as `CharacterSet.whitespaces` would (tab and the Zs category).
        var token = Substring(utf8).unicodeScalars
        while let first = token.first, isSpace(first) { token.removeFirst() }
        while let last = token.last, isSpace(last) { token.removeLast() }
        guard !token.isEmpty else { return nil }
        return String(token)
    }

    private static func isSpace(_ scalar: Unicode.Scalar) -> Bool {
        if scalar.isASCII { return scalar == " " || scalar == "\t" }
        return scalar.properties.generalCategory == .spaceSeparator
    }

    // MARK: - Headers

    /// Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy sets itself.
    private static let requestHeadersNotForwarded: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding", "expect",
        // Weir's own: how long the caller waits for room (`maxWaitHeader`).
        Gateway.maxWaitHeader,
    ]
    private static let responseHeadersNotForwarded: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "content-length", "date", "server",
    ]
    /// The upstream's own rate limit headers, replaced by Weir's on the table's paths.
    private static let rateLimitHeaders: Set<String> = [
        RateLimitHeaders.limitRequests, RateLimitHeaders.remainingRequests, RateLimitHeaders.resetRequests,
        RateLimitHeaders.limitTokens, RateLimitHeaders.remainingTokens, RateLimitHeaders.resetTokens,
        "ratelimit-policy", "ratelimit",
    ]

    /// Names listed in `Connection` values: hop-by-hop for this message.
    private static func connectionOptions(_ values: [String]) -> Set<String> {
        var names = Set<String>()
        for value in values {
            for name in value.split(separator: ",") {
                names.insert(name.trimmingCharacters(in: .whitespaces).lowercased())
            }
        }
        return names
    }

    func forwardedHeaders(_ fields: HTTPFields) -> HTTPHeaders {
        let named = Self.connectionOptions(fields[values: .connection])
        var headers = HTTPHeaders()
        for field in fields where forwards(field.name.canonicalName, named: named) {
            headers.add(name: field.name.rawName, value: field.value)
        }
        if let key = configuration.upstreamKey { headers.add(name: "Authorization", value: "Bearer \(key)") }
        return headers
    }

    /// `forwardedHeaders(_:)` for a request head as NIO's HTTP/1 decoder gives it.
    func forwardedHeaders(_ fields: HTTPHeaders) -> HTTPHeaders {
        let named = Self.connectionOptions(fields["connection"])
        var headers = HTTPHeaders()
        for (name, value) in fields where forwards(name.lowercased(), named: named) {
            headers.add(name: name, value: value)
        }
        if let key = configuration.upstreamKey { headers.add(name: "Authorization", value: "Bearer \(key)") }
        return headers
    }

    /// Whether a request header (its lowercased name) goes on to the upstream: not
    /// hop-by-hop, not named by `Connection`, not the client's key when the gateway
    /// sends its own.
    private func forwards(_ name: String, named: Set<String>) -> Bool {
        if Self.requestHeadersNotForwarded.contains(name) || named.contains(name) { return false }
        return !(name == "authorization" && configuration.upstreamKey != nil)
    }

    /// The upstream's response headers for the client: hop-by-hop ones dropped, and the
    /// upstream's rate limit headers too when Weir's replace them.
    func responseHeaders(_ upstream: HTTPHeaders, replacingRateLimits: Bool = true) -> HTTPFields {
        let named = Self.connectionOptions(upstream["connection"])
        var fields = HTTPFields()
        for (name, value) in upstream {
            guard let fieldName = HTTPField.Name(name) else { continue }
            let lowered = fieldName.canonicalName  // lowercased once, by HTTPTypes
            if named.contains(lowered) { continue }
            if Self.responseHeadersNotForwarded.contains(lowered) { continue }
            if replacingRateLimits, Self.rateLimitHeaders.contains(lowered) { continue }
            fields.append(HTTPField(name: fieldName, value: value))
        }
        return fields
    }

    // MARK: - Upstream failures

    /// Whether the request never left: the connection could not be made.
    static func neverSent(_ error: any Error) -> Bool {
        if let error = error as? HTTPClientError { return error == .connectTimeout }
        if error is NIOConnectionError { return true }
        if let error = error as? IOError, error.errnoCode == ECONNREFUSED { return true }
        if let error = error as? ChannelError, case .connectTimeout = error { return true }
        return false
    }

    private func upstreamError(_ error: any Error) -> APIError {
        if let error = error as? HTTPClientError, error == .deadlineExceeded || error == .readTimeout {
            return GatewayErrors.upstreamTimeout(timeoutText)
        }
        if let error = error as? APIError { return error }
        service.logger.warning("gateway: upstream failed", metadata: ["upstream": "\(base)", "error": "\(error)"])
        return GatewayErrors.upstreamFailed(Self.neverSent(error) ? "cannot connect to the upstream" : "the connection to the upstream failed")
    }

    // MARK: - Other paths

    /// A request outside the table, with `--forward-unknown`: forwarded untouched (its
    /// body streamed both ways), no limits applied. Weir's own admin paths are never
    /// forwarded.
    private func forwardUnknown(_ request: Request) async throws -> Response {
        let path = request.head.path ?? "/"
        if path.hasPrefix("/admin/") { throw HTTPError(.notFound) }
        var upstreamRequest = HTTPClientRequest(url: base + path)
        upstreamRequest.method = HTTPMethod(rawValue: request.method.rawValue)
        upstreamRequest.headers = forwardedHeaders(request.headers)
        let length = request.headers[.contentLength].flatMap { Int64($0) }
        if request.method != .get, request.method != .head {
            upstreamRequest.body = .stream(request.body, length: length.map { .known($0) } ?? .unknown)
        }
        let response: HTTPClientResponse
        let silence = TimeAmount.nanoseconds(Int64(clamping: configuration.timeout))
        do {
            // The deadline covers the wait for the head; the body's silences are timed below.
            response = try await client.execute(upstreamRequest, deadline: .now() + silence)
        } catch {
            return GatewayErrors.response(upstreamError(error), dialect: .openAI).response
        }
        let status = HTTPResponse.Status(code: Int(response.status.code), reasonPhrase: response.status.reasonPhrase)
        return Response(
            status: status, headers: responseHeaders(response.headers, replacingRateLimits: false),
            body: ResponseBody { writer in
                let pieces = response.body.makeAsyncIterator()
                while let chunk = try await Self.next(of: pieces, within: silence) { try await writer.write(chunk) }
                try await writer.finish(nil)
            })
    }

    /// The body's next piece, or `HTTPClientError.readTimeout` when the upstream is
    /// silent for `silence` (the pending read is then cancelled, and with it the
    /// request). The iterator is a reference to the body's stream: the child task reads
    /// through a copy, and only one read is in flight at a time.
    private static func next(
        of pieces: HTTPClientResponse.Body.AsyncIterator, within silence: TimeAmount
    ) async throws -> ByteBuffer? {
        nonisolated(unsafe) let pieces = pieces
        return try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask {
                var reader = pieces
                return try await reader.next()
            }
            group.addTask {
                try await Task.sleep(nanoseconds: UInt64(silence.nanoseconds))
                throw HTTPClientError.readTimeout
            }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
    }
}
