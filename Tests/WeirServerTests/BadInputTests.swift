import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import WeirCore
import WeirServer

@Suite("Bad input: every answer has its status and names what is wrong")
struct BadInputTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var uri = "/v1/acquire"
        var body: String
        var status: HTTPResponse.Status
        var field: String
        var message: String
        var testDescription: String { "\(uri) \(body) -> \(status.code) \(field)" }
    }

    static let cases: [Case] = [
        Case(body: "{", status: .badRequest, field: "body", message: "malformed JSON at byte 1"),
        Case(body: "", status: .badRequest, field: "body", message: "empty"),
        Case(body: "[1, 2]", status: .badRequest, field: "body", message: "must be a JSON object"),
        Case(body: #"{"account": "a", "api": "text", "model": "MiniMax-M2"} x"#, status: .badRequest, field: "body", message: "unexpected text"),
        Case(body: #"{"api": "text", "model": "MiniMax-M2"}"#, status: .badRequest, field: "api_key", message: "give api_key or account"),
        Case(body: #"{"api_key": "k", "account": "a", "api": "text", "model": "MiniMax-M2"}"#, status: .badRequest, field: "account", message: "not both"),
        Case(body: #"{"api_key": 5, "api": "text", "model": "MiniMax-M2"}"#, status: .badRequest, field: "api_key", message: "must be a string"),
        Case(body: #"{"account": "", "api": "text", "model": "MiniMax-M2"}"#, status: .badRequest, field: "account", message: "must not be empty"),
        Case(body: #"{"account": "a", "model": "MiniMax-M2"}"#, status: .badRequest, field: "api", message: "required"),
        Case(body: #"{"account": "a", "api": 3, "model": "MiniMax-M2"}"#, status: .badRequest, field: "api", message: "must be a string"),
        Case(body: #"{"account": "a", "api": "text"}"#, status: .badRequest, field: "model", message: "required"),
        Case(body: #"{"account": "a", "api": "telepathy", "model": "x"}"#, status: .badRequest, field: "api", message: "unknown API `telepathy`"),
        Case(body: #"{"account": "a", "api": "text", "model": "GPT-9"}"#, status: .badRequest, field: "model", message: "unknown model `GPT-9`"),
        Case(body: #"{"account": "a", "api": "text", "model": "MiniMax-M2", "units": -5}"#, status: .badRequest, field: "units", message: "must be a non-negative integer, got -5"),
        Case(body: #"{"account": "a", "api": "text", "model": "MiniMax-M2", "units": 1.5}"#, status: .badRequest, field: "units", message: "must be a non-negative integer, got 1.5"),
        Case(body: #"{"account": "a", "api": "text", "model": "MiniMax-M2", "units": 1e-1}"#, status: .badRequest, field: "units", message: "must be a non-negative integer, got 1e-1"),
        Case(body: #"{"account": "a", "api": "text", "model": "MiniMax-M2", "units": -1.0}"#, status: .badRequest, field: "units", message: "must be a non-negative integer, got -1.0"),
        Case(body: #"{"account": "a", "api": "text", "model": "MiniMax-M2", "units": 1.8446744073709551616e19}"#, status: .badRequest, field: "units", message: "too large"),
        Case(body: #"{"account": "a", "api": "text", "model": "MiniMax-M2", "units": "12"}"#, status: .badRequest, field: "units", message: "must be a non-negative integer, got a string"),
        Case(body: #"{"account": "a", "api": "text", "model": "MiniMax-M2", "units": 99999999999999999999999}"#, status: .badRequest, field: "units", message: "too large"),
        Case(body: #"{"account": "a", "api": "text", "model": "MiniMax-M2", "lease_ttl_ms": 0}"#, status: .badRequest, field: "lease_ttl_ms", message: "must be between 1 and"),
        Case(uri: "/v1/settle", body: #"{"units": 1}"#, status: .badRequest, field: "lease", message: "required"),
        Case(uri: "/v1/settle", body: #"{"lease": "not-a-lease", "units": 1}"#, status: .badRequest, field: "lease", message: "16 hexadecimal digits"),
        Case(uri: "/v1/settle", body: #"{"lease": "00000000000000ff"}"#, status: .badRequest, field: "units", message: "required"),
        Case(uri: "/v1/settle", body: #"{"lease": "00000000000000ff", "units": -1}"#, status: .badRequest, field: "units", message: "non-negative integer"),
    ]

    @Test("bad request bodies", arguments: cases)
    func badRequest(_ testCase: Case) async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.router) { client in
            let response = try await client.post(testCase.uri, testCase.body)
            #expect(response.status == testCase.status, "\(response.text)")
            let (field, message) = try errorField(response)
            #expect(field == testCase.field)
            #expect(message?.contains(testCase.message) == true, "message: \(message ?? "none")")
            #expect(message?.hasPrefix(testCase.field + ":") == true)
        }
    }

    @Test("an unknown API key is 401 with MiniMax code 1004, and the key is not echoed")
    func unknownKey() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.router) { client in
            let response = try await client.post(
                "/v1/acquire", #"{"api_key": "weir_nope1234_secretsecretsecret", "api": "text", "model": "MiniMax-M2"}"#)
            #expect(response.status == .unauthorized)
            let base = try #require(try response.json["base_resp"] as? [String: Any])
            #expect(int(base, "status_code") == 1004)
            #expect((base["status_msg"] as? String)?.contains("invalid api key") == true)
            #expect(!response.text.contains("secretsecret"))
        }
    }

    @Test("a body over 1 MiB is 413", arguments: [TestingSetup.router, .live])
    func tooLarge(setup: TestingSetup) async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(setup) { client in
            let padding = String(repeating: "x", count: 1 << 20)
            let response = try await client.post(
                "/v1/acquire", #"{"account": "a", "api": "text", "model": "MiniMax-M2", "pad": "\#(padding)"}"#)
            #expect(response.status == .contentTooLarge)
            #expect(try errorField(response).field == "body")
        }
    }

    @Test("nested too deep, invalid UTF-8 and stray bytes are 400, never 500")
    func hostileBodies() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.router) { client in
            let deep = String(repeating: "[", count: 10_000)
            for body in [deep, "{\"account\": \"\u{FFFD}\", \"api\": \"\\ud800\"}", "\u{0}", "nul", "{\"a\":1,}", "-", "\"\\u12\""] {
                let response = try await client.post("/v1/acquire", body)
                #expect(response.status == .badRequest, "\(body.prefix(20)): \(response.text)")
            }
            var bytes = ByteBuffer()
            bytes.writeBytes([0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x3A, 0x31, 0x7D])
            let invalid = try await client.execute(uri: "/v1/acquire", method: .post, headers: jsonHeaders, body: bytes)
            #expect(invalid.status == .badRequest)
        }
    }
}
