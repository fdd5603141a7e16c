import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
import WeirCore
import WeirServer

/// The usage snapshot, its stream (server-sent events) and the dashboard page, driven
/// in process (`.router`) and over real sockets with AsyncHTTPClient.
@Suite("Dashboard: usage stream and page", .timeLimit(.minutes(1)))
struct DashboardStreamTests {
    static let acquire = #"{"account": "acme", "api": "text", "model": "MiniMax-M2-Stable"}"#

    @Test("the usage endpoints need the admin token: 401 without or with a wrong one, 403 when disabled")
    func authentication() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.router) { client in
            for path in ["/admin/v1/usage", "/admin/v1/usage/stream"] {
                let missing = try await client.admin(.get, path, token: nil)
                #expect(missing.status == .unauthorized)
                #expect(try errorField(missing).message?.contains("Bearer") == true)
                let wrong = try await client.admin(.get, path, token: "wrong")
                #expect(wrong.status == .unauthorized)
                #expect(try errorField(wrong).message == "wrong admin token")
            }
            let badInterval = try await client.admin(.get, "/admin/v1/usage/stream?interval_ms=5")
            #expect(badInterval.status == .badRequest)
            #expect(try errorField(badInterval).field == "interval_ms")
        }
        let disabled = try await buildApplication(configuration: testConfiguration(adminToken: nil))
        try await disabled.test(.router) { client in
            let response = try await client.admin(.get, "/admin/v1/usage/stream")
            #expect(response.status == .forbidden)
        }
    }

    @Test("a snapshot lists registry, config and traffic accounts with their limits; refusals through the routes count")
    func snapshot() async throws {
        let directory = scratchDirectory()
        let config = directory + "/weir.yaml"
        try (OperationsTests.smallConfig + "\naccounts:\n  - id: from-config\n").write(toFile: config, atomically: true, encoding: .utf8)
        let clock = ManualClock(start: 3 * RefusalHistory.minuteLength + 5 * Nanoseconds.perSecond)
        let app = try await buildApplication(configuration: testConfiguration(clock: clock, configPath: config))
        try await app.test(.router) { client in
            #expect(try await client.admin(.put, "/admin/v1/accounts/registered", "{}").status == .created)
            let acquire = #"{"account": "walk-in", "api": "text", "model": "MiniMax-M2"}"#
            let statuses = try await (0..<5).asyncMap { _ in try await client.post("/v1/acquire", acquire).status }
            #expect(statuses == [.ok, .ok, .ok, .tooManyRequests, .tooManyRequests])

            let response = try await client.admin(.get, "/admin/v1/usage")
            #expect(response.status == .ok)
            let json = try response.json
            #expect(json["tiers"] as? [String] == ["free", "paid"])
            let accounts = try #require(json["accounts"] as? [[String: Any]])
            let ids = accounts.compactMap { $0["id"] as? String }
            #expect(ids.first == "walk-in")  // closest to a limit first
            #expect(Set(ids) == ["walk-in", "registered", "from-config"])
            let walkIn = try #require(accounts.first)
            #expect(walkIn["sources"] as? [String] == ["traffic", "refusals"])
            #expect((walkIn["closeness"] as? NSNumber)?.doubleValue == 1)
            #expect(int(walkIn, "refused") == 2)
            var expected = [Int](repeating: 0, count: 30)
            expected[29] = 2
            #expect((walkIn["refusals"] as? [String: [Int]]) == ["requests": expected])
            let limits = try #require(walkIn["limits"] as? [[String: Any]])
            let requests = try #require(limits.first { $0["dimension"] as? String == "requests" && $0["api"] as? String == "text" })
            #expect(int(requests, "used") == 3)
            #expect(int(requests, "limit") == 3)
            #expect(int(requests, "remaining") == 0)
            let registered = try #require(accounts.first { $0["id"] as? String == "registered" })
            #expect(registered["sources"] as? [String] == ["registry"])
            #expect(int(registered, "refused") == 0)
            #expect((registered["closeness"] as? NSNumber)?.doubleValue == 0)

            // A minute later the refusals have moved one place left.
            clock.advance(by: RefusalHistory.minuteLength)
            let later = try await client.admin(.get, "/admin/v1/usage").json
            let moved = try #require((later["accounts"] as? [[String: Any]])?.first { $0["id"] as? String == "walk-in" })
            expected[29] = 0
            expected[28] = 2
            #expect((moved["refusals"] as? [String: [Int]]) == ["requests": expected])
        }
    }

    @Test("the stream sends one usage event at once, then one per interval; refusals on the fast path count")
    func stream() async throws {
        let clock = ManualClock(start: 10 * RefusalHistory.minuteLength)
        let app = try await buildApplication(configuration: testConfiguration(clock: clock))
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let http = HTTPTestClient(port: port, adminToken: "test-admin-token")
            #expect(try await http.send(.PUT, "/admin/v1/accounts/acme", "{}").status == 201)
            var refused = 0
            for _ in 0..<23 {
                if try await http.send(.POST, "/v1/acquire", Self.acquire).status == 429 { refused += 1 }
            }
            #expect(refused == 3)

            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/admin/v1/usage/stream?interval_ms=100")
            request.headers.add(name: "Authorization", value: "Bearer test-admin-token")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            #expect(response.status == .ok)
            #expect(response.headers.first(name: "content-type") == "text/event-stream; charset=utf-8")
            #expect(response.headers.first(name: "cache-control") == "no-store")
            var text = ""
            for try await chunk in response.body {
                text += String(buffer: chunk)
                if text.components(separatedBy: "\n\n").count > 2 { break }  // two whole events
            }
            let events = text.components(separatedBy: "\n\n").prefix(2)
            for (index, event) in events.enumerated() {
                let lines = event.split(separator: "\n", omittingEmptySubsequences: false)
                #expect(lines.count == 3)
                #expect(lines[0] == "event: usage")
                #expect(lines[1] == "id: \(index + 1)")
                #expect(lines[2].hasPrefix("data: {"))
                let data = Data(lines[2].dropFirst("data: ".count).utf8)
                let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
                #expect(int(json, "sequence") == index + 1)
                #expect(int(json, "interval_ms") == 100)
                #expect(int(json, "minutes") == 30)
                let acme = try #require((json["accounts"] as? [[String: Any]])?.first { $0["id"] as? String == "acme" })
                #expect(int(acme, "refused") == 3)
                #expect((acme["refusals"] as? [String: [Int]])?["requests"]?.last == 3)
                let limit = (acme["limits"] as? [[String: Any]])?.first {
                    $0["rule"] as? String == "text-minimax-m2-stable" && $0["dimension"] as? String == "requests"
                }
                #expect(int(limit, "used") == 20)
                #expect(int(limit, "limit") == 20)
            }
        }
    }

    @Test("a gateway denial is a refusal in the snapshot too")
    func gatewayRefusals() async throws {
        try await GatewayHarness.run { gateway in
            let key = try await gateway.key(for: "acme")
            let body = #"{"model": "speech-2.6-hd", "text": "hello"}"#
            for expected: UInt in [200, 200, 429] {
                #expect(try await gateway.send("/v1/t2a_v2", body: body, key: key).status == expected)
            }
            let usage = try await gateway.send("/admin/v1/usage", method: .GET, headers: ["Authorization": "Bearer test-admin-token"])
            let acme = try #require((usage.json["accounts"] as? [[String: Any]])?.first { $0["id"] as? String == "acme" })
            #expect(int(acme, "refused") == 1)
            #expect((acme["refusals"] as? [String: [Int]])?["requests"]?.last == 1)
        }
    }

    @Test("/dashboard is a self-contained page: no external asset, no inline script, strict CSP")
    func page() async throws {
        let app = try await buildApplication(configuration: testConfiguration())
        try await app.test(.router) { client in
            let page = try await client.execute(uri: "/dashboard", method: .get)
            #expect(page.status == .ok)
            #expect(page.header("content-type") == "text/html; charset=utf-8")
            let csp = try #require(page.header("content-security-policy"))
            #expect(csp.contains("default-src 'none'"))
            #expect(csp.contains("script-src 'self'"))
            #expect(csp.contains("form-action 'none'"))
            #expect(page.header("x-content-type-options") == "nosniff")
            #expect(page.text.contains(#"<input id="token" name="token" type="password""#))
            #expect(page.text.contains(#"<script src="/dashboard/app.js" defer></script>"#))
            #expect(page.text.components(separatedBy: "<script").count == 2)  // one script, from this server
            for (path, type) in [("/dashboard/app.js", "text/javascript"), ("/dashboard/app.css", "text/css")] {
                let asset = try await client.execute(uri: path, method: .get)
                #expect(asset.status == .ok)
                #expect(asset.header("content-type")?.hasPrefix(type) == true)
                // The SVG namespace is a name, not a place the page loads from.
                let text = asset.text.replacingOccurrences(of: "\"http://www.w3.org/2000/svg\"", with: "")
                #expect(!text.contains("http://") && !text.contains("https://") && !text.contains("url("))
            }
            let script = try await client.execute(uri: "/dashboard/app.js", method: .get).text
            #expect(script.contains("sessionStorage"))
            #expect(script.contains(#""Authorization": "Bearer ""#))
            #expect(!script.contains("innerHTML"))
            #expect(!script.contains("localStorage"))
        }
    }

    @Test("SIGTERM ends an open stream and the server exits cleanly")
    func shutdownWithOpenStream() async throws {
        let data = scratchDirectory()
        let tokenFile = data + "/admin-token"
        try "stream-token\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let server = try ServerProcess(arguments: ["serve", "--port", "0", "--data", data + "/registry", "--admin-token-file", tokenFile])
        let port = try await server.port()
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/admin/v1/usage/stream")
        request.headers.add(name: "Authorization", value: "Bearer stream-token")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        #expect(response.status == .ok)
        var iterator = response.body.makeAsyncIterator()
        let first = try await iterator.next()
        #expect(first.map { String(buffer: $0) }?.hasPrefix("event: usage\nid: 1\n") == true)
        server.signal(SIGTERM)
        while try await iterator.next() != nil {}  // the server ends the body
        #expect(await server.exitStatus() == 0)
    }
}

extension Sequence {
    /// `map` with an async transform, in order.
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
