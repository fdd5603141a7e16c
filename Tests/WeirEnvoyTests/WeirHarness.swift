import Foundation
import HTTPTypes
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Synchronization
import Testing
import WeirCore
import WeirPolicy
import WeirEnvoy
import WeirServer
import WeirRedisTesting

typealias RLSRequest = Envoy_Service_Ratelimit_V3_RateLimitRequest
typealias RLSResponse = Envoy_Service_Ratelimit_V3_RateLimitResponse
typealias RLSDescriptor = Envoy_Extensions_Common_Ratelimit_V3_RateLimitDescriptor

/// The admin token every harness uses.
let adminToken = "envoy-test-admin-token"

/// A fresh scratch directory under the system's temporary directory.
func scratchDirectory() -> String {
    let path = FileManager.default.temporaryDirectory
        .appendingPathComponent("weir-envoy-tests-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Receives the port the gRPC service reports once it listens; `port()` waits for
/// that report (event-driven; the suite's time limit ends a wait that never ends), for
/// one waiting test.
final class PortBox: Sendable {
    private let reports: AsyncStream<Int>
    private let continuation: AsyncStream<Int>.Continuation

    init() {
        (reports, continuation) = AsyncStream.makeStream(of: Int.self, bufferingPolicy: .bufferingNewest(1))
    }

    func set(_ port: Int) { continuation.yield(port) }

    /// The port, once reported (a wait ended by the suite's time limit if none comes).
    func port() async throws -> Int {
        for await port in reports { return port }
        throw HarnessError("the gRPC service ended without reporting a port")
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A `weir serve` application in this process with its gRPC rate limit service on a
/// free port, a manual clock (time never passes unless a test moves it) and a scratch
/// registry. `run` serves it over real sockets for the body's duration.
struct WeirHarness {
    let clock: ManualClock
    let configuration: ServerConfiguration
    let ports = PortBox()
    /// Pinged by every decision and settlement of the server (Envoy's usage reports
    /// included), for tests that wait on them.
    let signal = EventSignal()
    /// What wakes calls waiting for room (`max_wait_ms`), on `clock`.
    let timer: ManualWaitTimer

    init(
        clock: ManualClock = ManualClock(start: 1_000 * Nanoseconds.perSecond),
        domain: String = "weir",
        unknown: UnknownDescriptorAnswer = .allow,
        configPath: String? = nil,
        maxBodySize: Int = 1 << 20
    ) {
        self.clock = clock
        let timer = ManualWaitTimer(clock: clock)
        self.timer = timer
        var configuration = ServerConfiguration(
            host: "127.0.0.1", port: 0, configPath: configPath, dataDirectory: scratchDirectory(),
            adminToken: adminToken, clock: clock,
            logger: Logger(label: "weir-envoy-test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let ports = self.ports
        configuration.maxBodySize = maxBodySize
        configuration.waitTimer = timer
        configuration.observer = signal
        configuration.envoy = EnvoyServiceConfiguration(
            host: "127.0.0.1", port: 0, domain: domain, unknownDescriptors: unknown,
            onListening: { ports.set($0) })
        self.configuration = configuration
    }

    /// Serves Weir (HTTP and gRPC) while `body` runs; `body` gets the HTTP test client
    /// and the gRPC port.
    func run<Value: Sendable>(_ body: @Sendable (any TestClientProtocol, Int) async throws -> Value) async throws -> Value {
        let app = try await buildApplication(configuration: configuration)
        return try await app.test(.live) { client in
            try await body(client, try await ports.port())
        }
    }
}

extension TestClientProtocol {
    /// An admin API call with the harness's token.
    func admin(_ method: HTTPRequest.Method, _ uri: String, _ json: String? = nil) async throws -> TestResponse {
        let headers: HTTPFields = [.authorization: "Bearer \(adminToken)", .contentType: "application/json"]
        return try await execute(uri: uri, method: method, headers: headers, body: json.map { ByteBuffer(string: $0) })
    }

    /// Creates account `id` (recharged by `recharge` when given) and returns a new API key of it.
    func createAccount(_ id: String, recharge: Int? = nil) async throws -> String {
        let created = try await admin(.put, "/admin/v1/accounts/\(id)", "{}")
        guard created.status == .created || created.status == .ok else {
            throw HarnessError("PUT account \(id): \(created.status) \(String(buffer: created.body))")
        }
        if let recharge {
            let recharged = try await admin(.post, "/admin/v1/accounts/\(id)/recharges", #"{"amount": \#(recharge)}"#)
            guard recharged.status == .ok else { throw HarnessError("recharge \(id): \(recharged.status)") }
        }
        let key = try await admin(.post, "/admin/v1/accounts/\(id)/keys")
        let object = try JSONSerialization.jsonObject(with: Data(String(buffer: key.body).utf8)) as? [String: Any]
        guard let apiKey = object?["api_key"] as? String else { throw HarnessError("no api_key in \(String(buffer: key.body))") }
        return apiKey
    }

    /// The used units of `dimension` of `scope` from the admin usage endpoint.
    func used(account: String, scope: String, dimension: String) async throws -> Int? {
        let usage = try await admin(.get, "/admin/v1/accounts/\(account)/usage")
        let object = try JSONSerialization.jsonObject(with: Data(String(buffer: usage.body).utf8)) as? [String: Any]
        let limits = object?["limits"] as? [[String: Any]] ?? []
        let entry = limits.first { $0["scope"] as? String == scope && $0["dimension"] as? String == dimension }
        return (entry?["used"] as? NSNumber)?.intValue
    }

    /// The `/metrics` text.
    func metrics() async throws -> String {
        String(buffer: try await execute(uri: "/metrics", method: .get, headers: [:], body: nil).body)
    }
}

/// Calls `ShouldRateLimit` on 127.0.0.1:`port` over a real HTTP/2 connection.
func withRateLimitClient<Value: Sendable>(
    port: Int,
    _ body: @Sendable (Envoy_Service_Ratelimit_V3_RateLimitService.Client<HTTP2ClientTransport.Posix>) async throws -> Value
) async throws -> Value {
    let transport = try HTTP2ClientTransport.Posix(
        target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
    return try await withGRPCClient(transport: transport) { client in
        try await body(Envoy_Service_Ratelimit_V3_RateLimitService.Client(wrapping: client))
    }
}

/// A request of `descriptors` (each a list of (key, value) entries) in `domain`.
func rlsRequest(
    domain: String = "weir", hits: UInt32 = 0, _ descriptors: [[(String, String)]], descriptorHits: [UInt64?] = []
) -> RLSRequest {
    var request = RLSRequest()
    request.domain = domain
    request.hitsAddend = hits
    for (index, entries) in descriptors.enumerated() {
        var descriptor = RLSDescriptor()
        descriptor.entries = entries.map { key, value in
            var entry = RLSDescriptor.Entry()
            entry.key = key
            entry.value = value
            return entry
        }
        if index < descriptorHits.count, let hits = descriptorHits[index] {
            descriptor.hitsAddend = .init(hits)
        }
        request.descriptors.append(descriptor)
    }
    return request
}

extension RLSResponse {
    /// The value of response header `name` (case-insensitive), if Weir added it.
    func header(_ name: String) -> String? {
        responseHeadersToAdd.first { $0.key.lowercased() == name.lowercased() }?.value
    }

    var bodyText: String { String(decoding: rawBody, as: UTF8.self) }
}
