import Foundation
import Testing
import WeirRedisTesting

/// The API's contract (`Sources/WeirServer/Contract/openapi.json`, served at
/// `GET /openapi.json`) checked by a machine (issue 17, point 4): schemathesis (PyPI;
/// `scripts/install-deps --tests` installs it) reads the document from a running
/// `weir serve` and sends it generated requests, valid and invalid, one operation at a
/// time and in chains (the document's links: create an account, give it a key, use and
/// revoke the key; acquire, then settle). Every answer must be documented: its status,
/// content type, headers and body schema; invalid input must get a 4xx, never a 500;
/// no request may go unanswered for 10 s; admin calls without the token must be
/// refused; after the run the server is still up. On memory and on Redis.
///
/// Only `GET /admin/v1/usage/stream` is left out of the generated calls: it is endless by
/// design (`DashboardStreamTests` covers it).
@Suite("The OpenAPI contract, checked by schemathesis", .serialized, .timeLimit(.minutes(4)))
struct APIContractTests {
    enum Store: String, CaseIterable { case memory, redis }

    static let token = "contract-admin-token"

    @Test("every generated request gets a documented answer, never a 500 or a hang", arguments: Store.allCases)
    func schemathesis(store: Store) async throws {
        var redis: RedisServerProcess?
        if store == .redis { redis = try await RedisServerProcess() }
        defer { redis?.stop() }
        let directory = scratchDirectory()
        let tokenFile = directory + "/admin-token"
        try Self.token.write(toFile: tokenFile, atomically: true, encoding: .utf8)
        // Waits short enough for schemathesis's 10 s request timeout.
        var arguments = [
            "serve", "--port", "0", "--data", directory + "/registry", "--admin-token-file", tokenFile, "--max-wait-ms", "2000",
        ]
        if let redis { arguments += ["--store", "redis://127.0.0.1:\(redis.port)", "--redis-prefix", "contract:"] }
        let server = try ServerProcess(arguments: arguments)
        let port = try await server.port()

        let run = try await ChildProcess.run("/usr/bin/env", [
            "python3", "-m", "schemathesis.cli", "run", "http://127.0.0.1:\(port)/openapi.json",
            "--header", "Authorization: Bearer \(Self.token)",
            // Every check but positive_data_acceptance: a schema-valid body may still name
            // an API, model or account the running catalogue does not have (a documented 400).
            "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            "--exclude-operation-id", "usageStream",
            "--max-examples", "40", "--request-timeout", "10",
            // One worker: hypothesis under CPython 3.11 can fail to parse its own
            // sources from several threads at once ("AST constructor recursion depth mismatch").
            "--workers", "1",
            "--seed", store == .memory ? "17017" : "71071",
            "--generation-database", "none",
            "--no-color",
        ])
        #expect(run.status == 0, "schemathesis found answers outside the contract (scripts/install-deps --tests installs it):\n\(run.output)\n\(run.error)")
        #expect(run.output.contains("passed"), "\(run.output)")

        // Still up, and still deciding.
        let client = HTTPTestClient(port: port, adminToken: Self.token)
        #expect(try await client.send(.GET, "/healthz").status == 200)
        let decided = try await client.send(.POST, "/v1/acquire", #"{"account": "after-contract", "api": "text", "model": "MiniMax-M2"}"#)
        #expect(decided.status == 200, "\(decided.body)")
    }

    @Test("the served document is the repository's, and names every status the decision API has")
    func served() async throws {
        let directory = scratchDirectory()
        let server = try ServerProcess(arguments: ["serve", "--port", "0", "--data", directory + "/registry"])
        let client = HTTPTestClient(port: try await server.port(), adminToken: nil)
        let answer = try await client.send(.GET, "/openapi.json")
        #expect(answer.status == 200)
        #expect(answer.headers.first(name: "content-type") == "application/json")
        #expect(Data(answer.body.utf8) == (try Data(contentsOf: Self.repository.appendingPathComponent("Sources/WeirServer/Contract/openapi.json"))))
        let acquire = try #require(((answer.json["paths"] as? [String: Any])?["/v1/acquire"] as? [String: Any])?["post"] as? [String: Any])
        let statuses = Set((acquire["responses"] as? [String: Any] ?? [:]).keys)
        #expect(statuses == ["200", "400", "401", "403", "413", "429", "503"])

        // A described path with another method: 405 with Allow; an undescribed one: 404. Both with the Error body.
        let wrongMethod = try await client.send(.GET, "/v1/acquire")
        #expect(wrongMethod.status == 405)
        #expect(wrongMethod.headers.first(name: "allow") == "POST")
        #expect((wrongMethod.json["error"] as? [String: Any])?["code"] as? String == "method_not_allowed")
        let nowhere = try await client.send(.GET, "/v2/nowhere")
        #expect(nowhere.status == 404)
        #expect((nowhere.json["error"] as? [String: Any])?["code"] as? String == "not_found")
    }

    @Test("the README lists exactly the contract's operations")
    func readme() throws {
        let contract = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Self.repository.appendingPathComponent("Sources/WeirServer/Contract/openapi.json"))) as? [String: Any]
        let paths = try #require(contract?["paths"] as? [String: [String: Any]])
        var described = Set<String>()
        for (path, item) in paths {
            for method in ["get", "put", "post", "delete", "patch"] where item[method] != nil {
                described.insert("\(method.uppercased()) \(path)")
            }
        }
        let text = try String(contentsOf: Self.repository.appendingPathComponent("README.md"), encoding: .utf8)
        // `METHOD /path` as the README writes calls (a query, `[?...]`, is not part of the path).
        let pattern = try NSRegularExpression(pattern: #"\b(GET|PUT|POST|DELETE|PATCH) (/[A-Za-z0-9_./{}-]*)"#)
        var listed = Set<String>()
        for match in pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
            let method = (text as NSString).substring(with: match.range(at: 1))
            let path = (text as NSString).substring(with: match.range(at: 2))
            listed.insert("\(method) \(path)")
        }
        #expect(described.subtracting(listed).sorted() == [], "operations of the contract missing from the README")
        // The README's calls of Weir's own API (the gateway's are the upstream's paths).
        let own = listed.filter { call in
            let path = call.split(separator: " ")[1]
            return ["/admin/", "/v1/acquire", "/v1/settle", "/healthz", "/readyz", "/metrics", "/openapi.json", "/dashboard"]
                .contains { path.hasPrefix($0) }
        }
        #expect(own.subtracting(described).sorted() == [], "calls in the README that the contract does not describe")
    }

    static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}
