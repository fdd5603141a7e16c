import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOHTTP1
import Testing
import WeirCore
import WeirPolicy
import WeirMockUpstream
import WeirServer
import WeirRedisTesting

/// A gateway (`weir serve` with an upstream) and a mock upstream, both running live in
/// this process on free 127.0.0.1 ports, with a manual clock for the limiter.
struct GatewayHarness: Sendable {
    let port: Int
    let upstreamPort: Int
    let control: MockUpstreamControl
    let clock: ManualClock
    /// What wakes calls waiting for room (`x-weir-max-wait-ms`), on `clock`.
    let timer: ManualWaitTimer
    /// The test's own client, with room for 100 concurrent connections.
    let client: HTTPClient
    /// Pinged by every decision and settlement of the gateway and every change at the
    /// mock upstream; `eventually` waits on it.
    let signal: EventSignal

    static let silent = Logger(label: "weir-test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// A catalogue of one rule, `chat`: MiniMax-M2, metered in tokens, `requests` and
    /// `tokens` per minute for every tier.
    static func chatConfig(requests: Int, tokens: Int) -> String {
        """
        tiers:
          - name: free
            recharge_threshold: 0
        rules:
          - name: chat
            api: text
            models: [MiniMax-M2]
            meter: tokens
            limits:
              all: {requests: \(requests), tokens: \(tokens)}
        """
    }

    /// A catalogue for gateway tests: text with concurrency 1 (so a slot that is not
    /// freed shows at once), the built-in music rule, t2a.
    static let config = """
        tiers:
          - name: free
            recharge_threshold: 0
        rules:
          - name: chat
            api: text
            models: [MiniMax-M2]
            meter: tokens
            default_output_reservation: 1000
            limits:
              all: {requests: 1000, tokens: 1000000, concurrency: 1}
          - name: t2a
            api: t2a
            models: [speech-2.6-hd]
            meter: characters
            limits:
              all: {requests: 2, tokens: 20000}
          - name: music
            api: music-generation
            models: [Music-2.0]
            limits:
              all: {requests: 120, concurrency: 20}
          - name: voice-design
            api: voice-design
            limits:
              all: {requests: 20}
          - name: images
            api: image-generation
            models: [image-01]
            meter: images
            limits:
              all: {requests: 10, tokens: 60}
        """

    /// Runs `body` against a fresh gateway and mock upstream.
    ///
    /// - Parameters:
    ///   - upstreamPortOverride: send the gateway to this port instead of the mock's
    ///     (a closed port, to see connection failures).
    static func run(
        config: String = GatewayHarness.config,
        timeout: UInt64 = 10 * Nanoseconds.perSecond,
        upstreamKey: String? = nil,
        forwardUnknown: Bool = false,
        maxResponseSize: Int = 64 << 20,
        mock: MockUpstreamConfiguration = MockUpstreamConfiguration(port: 0, logger: GatewayHarness.silent),
        upstreamPortOverride: Int? = nil,
        limits: ConnectionLimits = ConnectionLimits(),
        _ body: @Sendable (GatewayHarness) async throws -> Void
    ) async throws {
        let control = MockUpstreamControl()
        let signal = EventSignal()
        control.onChange { signal.ping() }
        var mock = mock
        mock.port = 0
        mock.logger = silent
        let upstream = MockUpstream.build(configuration: mock, control: control)
        try await upstream.test(.live) { upstreamClient in
            let upstreamPort = try #require(upstreamClient.port)
            let directory = scratchDirectory()
            let configPath = directory + "/weir.yaml"
            try config.write(toFile: configPath, atomically: true, encoding: .utf8)
            let clock = ManualClock(start: 1_000 * Nanoseconds.perSecond)
            var configuration = testConfiguration(clock: clock, configPath: configPath, dataDirectory: directory)
            let timer = ManualWaitTimer(clock: clock)
            configuration.waitTimer = timer
            configuration.observer = signal
            configuration.connectionLimits = limits
            configuration.gateway = GatewayConfiguration(
                upstream: URL(string: "http://127.0.0.1:\(upstreamPortOverride ?? upstreamPort)")!,
                upstreamKey: upstreamKey, timeout: timeout, forwardUnknown: forwardUnknown, maxResponseSize: maxResponseSize)
            let app = try await buildApplication(configuration: configuration)
            try await app.test(.live) { client in
                var clientConfiguration = HTTPClient.Configuration()
                clientConfiguration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 100)
                let httpClient = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: clientConfiguration)
                let harness = GatewayHarness(
                    port: try #require(client.port), upstreamPort: upstreamPort, control: control, clock: clock,
                    timer: timer, client: httpClient, signal: signal)
                do {
                    try await body(harness)
                } catch {
                    control.release()
                    try? await httpClient.shutdown()
                    throw error
                }
                control.release()
                try await httpClient.shutdown()
            }
        }
    }

    // MARK: - Accounts

    /// Creates `account` through the admin API and returns a new API key of it.
    func key(for account: String) async throws -> String {
        _ = try await send("/admin/v1/accounts/\(account)", method: .PUT, body: "{}", headers: ["Authorization": "Bearer test-admin-token"])
        let created = try await send(
            "/admin/v1/accounts/\(account)/keys", method: .POST, headers: ["Authorization": "Bearer test-admin-token"])
        return try #require(created.json["api_key"] as? String)
    }

    /// `used` of one dimension of an account's budget for (api rule, model).
    func used(_ account: String, rule: String, dimension: String) async throws -> Int? {
        let usage = try await send("/admin/v1/accounts/\(account)/usage", method: .GET, headers: ["Authorization": "Bearer test-admin-token"])
        let limits = usage.json["limits"] as? [[String: Any]] ?? []
        let entry = limits.first { $0["rule"] as? String == rule && $0["dimension"] as? String == dimension }
        return (entry?["used"] as? NSNumber)?.intValue
    }

    /// `weir_active_leases` from /metrics.
    func activeLeases() async throws -> Int? {
        let metrics = try await send("/metrics", method: .GET)
        let line = metrics.body.split(separator: "\n").first { $0.hasPrefix("weir_active_leases ") }
        // The gauge prints as a float (`3.0`).
        return line.flatMap { Double($0.split(separator: " ").last ?? "") }.map { Int($0) }
    }

    /// Waits until `condition` holds: checked now and after each event of the gateway
    /// (a decision, a settlement) or the mock upstream (a call begun, ended or
    /// abandoned), never on a timer; the suite's time limit ends a wait for `what` that
    /// never comes.
    func eventually(_ what: String, _ condition: @Sendable () async throws -> Bool) async throws {
        try await signal.wait(until: condition)
    }

    // MARK: - HTTP

    struct Answer: Sendable {
        var status: UInt
        var headers: HTTPHeaders
        var body: String
        var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:]
        }
        func header(_ name: String) -> String? { headers.first(name: name) }
        /// `base_resp.status_code` (MiniMax envelope).
        var miniMaxCode: Int? { ((json["base_resp"] as? [String: Any])?["status_code"] as? NSNumber)?.intValue }
    }

    /// One request to the gateway with AsyncHTTPClient, body read whole.
    func send(
        _ path: String, method: HTTPMethod = .POST, body: String? = nil, key: String? = nil,
        headers: [String: String] = [:]
    ) async throws -> Answer {
        let response = try await client.execute(request(path, method: method, body: body, key: key, headers: headers), timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 16 << 20)
        return Answer(status: response.status.code, headers: response.headers, body: String(buffer: bytes))
    }

    func request(
        _ path: String, method: HTTPMethod = .POST, body: String? = nil, key: String? = nil,
        headers: [String: String] = [:]
    ) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        request.headers.add(name: "Content-Type", value: "application/json")
        if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        return request
    }

    /// The `data:` payloads of an SSE body.
    static func events(_ body: String) -> [String] {
        body.components(separatedBy: "\n\n").compactMap { event in
            event.split(separator: "\n").first { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
        }
    }
}

