import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Synchronization
import Testing
import WeirCore
import WeirServer

/// A fresh scratch directory under the system's temporary directory.
func scratchDirectory() -> String {
    let path = FileManager.default.temporaryDirectory
        .appendingPathComponent("weir-server-tests-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Collects every log message and its metadata, to check what the server logs.
final class LogCapture: Sendable {
    let lines = Mutex<[String]>([])

    var text: String { lines.withLock { $0.joined(separator: "\n") } }

    func logger() -> Logger {
        var logger = Logger(label: "weir-test") { _ in CapturingHandler(capture: self) }
        logger.logLevel = .trace
        return logger
    }

    struct CapturingHandler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            capture.lines.withLock { $0.append("\(event.level) \(event.message) \(all)") }
        }
    }
}

/// A server configuration for tests: manual clock, scratch data directory, an admin token.
func testConfiguration(
    clock: ManualClock = ManualClock(start: 1_000 * Nanoseconds.perSecond),
    adminToken: String? = "test-admin-token",
    configPath: String? = nil,
    dataDirectory: String = scratchDirectory(),
    logs: LogCapture? = nil
) -> ServerConfiguration {
    ServerConfiguration(
        host: "127.0.0.1", port: 0, configPath: configPath, dataDirectory: dataDirectory,
        adminToken: adminToken, clock: clock,
        logger: logs?.logger() ?? Logger(label: "weir-test", factory: { _ in SwiftLogNoOpLogHandler() }))
}

let adminHeaders: HTTPFields = [.authorization: "Bearer test-admin-token", .contentType: "application/json"]
let jsonHeaders: HTTPFields = [.contentType: "application/json"]

extension TestClientProtocol {
    /// POSTs `json` to `uri`.
    func post(_ uri: String, _ json: String, headers: HTTPFields = jsonHeaders) async throws -> TestResponse {
        try await execute(uri: uri, method: .post, headers: headers, body: ByteBuffer(string: json))
    }

    func admin(_ method: HTTPRequest.Method, _ uri: String, _ json: String? = nil, token: String? = "test-admin-token") async throws -> TestResponse {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let token { headers[.authorization] = "Bearer \(token)" }
        return try await execute(uri: uri, method: method, headers: headers, body: json.map { ByteBuffer(string: $0) })
    }
}

extension TestResponse {
    /// The body parsed as a JSON object.
    var json: [String: Any] {
        get throws {
            let object = try JSONSerialization.jsonObject(with: Data(String(buffer: body).utf8))
            guard let dictionary = object as? [String: Any] else {
                throw TestFailure("body is not a JSON object: \(String(buffer: body))")
            }
            return dictionary
        }
    }

    var text: String { String(buffer: body) }

    func header(_ name: String) -> String? {
        headers[HTTPField.Name(name)!]
    }

    /// The entry of `limits` for `dimension`.
    func limit(_ dimension: String) throws -> [String: Any]? {
        let limits = try json["limits"] as? [[String: Any]]
        return limits?.first { $0["dimension"] as? String == dimension }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// `field` of a JSON object as an integer.
func int(_ object: [String: Any]?, _ field: String) -> Int? {
    (object?[field] as? NSNumber)?.intValue
}

/// `error.field` and `error.message` of an error body.
func errorField(_ response: TestResponse) throws -> (field: String?, message: String?) {
    let error = try response.json["error"] as? [String: Any]
    return (error?["field"] as? String, error?["message"] as? String)
}
