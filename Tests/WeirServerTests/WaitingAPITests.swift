import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import WeirCore
import WeirPolicy
import WeirRedisTesting
@testable import WeirServer

/// `max_wait_ms` on `/v1/acquire` over real sockets: answered when the limit admits the
/// call, on a manual clock and timer (never a sleep); refused at once when it cannot
/// wait long enough; a client that goes away stops waiting; bad values are 400s.
@Suite("Waiting for room over /v1/acquire", .timeLimit(.minutes(1)))
struct WaitingAPITests {
    static let second = Nanoseconds.perSecond
    static let start: UInt64 = 1_000 * second

    static func acquire(_ account: String, wait: Int? = nil) -> String {
        let waitField = wait.map { #", "max_wait_ms": \#($0)"# } ?? ""
        return #"{"account": "\#(account)", "api": "text", "model": "MiniMax-M2"\#(waitField)}"#
    }

    static func request(_ body: String) -> String {
        "POST /v1/acquire HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    @Test("a waiting call is answered 200 when the window moves; one that cannot wait long enough is 429 at once")
    func waitsThenAdmitted() async throws {
        let clock = ManualClock(start: Self.start)
        let timer = ManualWaitTimer(clock: clock)
        let signal = EventSignal()
        var configuration = testConfiguration(clock: clock)
        configuration.waitTimer = timer
        configuration.observer = signal
        let app = try await buildApplication(configuration: configuration)
        try await app.test(.live) { client in
            let port = try #require(client.port)
            // The free tier: 20 MiniMax-M2 calls a minute.
            for _ in 1...20 { #expect(try await client.post("/v1/acquire", Self.acquire("w-1")).status == .ok) }
            let short = try await client.post("/v1/acquire", Self.acquire("w-1", wait: 30_000))
            #expect(short.status == .tooManyRequests)
            #expect(String(buffer: short.body).contains(#""retry_after_ms":60000"#))

            let connection = try RawConnection(port: port)
            try connection.send(Self.request(Self.acquire("w-1", wait: 60_000)))
            // Waiting: its deadline and its wake-up are scheduled.
            await timer.waitForPending(2)
            timer.advance(to: Self.start + 60 * Self.second)
            let answer = try await connection.readAnswer()
            #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer)")
            #expect(answer.contains(#""allowed":true"#))
            let metrics = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(metrics.contains(#"weir_waits_total{outcome="admitted"} 1"#))
            #expect(metrics.contains("weir_waiting_calls 0"))
            #expect(metrics.contains(#"weir_decisions_total{api="text",model="MiniMax-M2",outcome="allowed",reason="none"} 21"#))
        }
    }

    @Test("a client that goes away while its call waits stops waiting: nothing stays queued or held")
    func clientGone() async throws {
        let clock = ManualClock(start: Self.start)
        let timer = ManualWaitTimer(clock: clock)
        let signal = EventSignal()
        var configuration = testConfiguration(clock: clock)
        configuration.waitTimer = timer
        configuration.observer = signal
        let app = try await buildApplication(configuration: configuration)
        try await app.test(.live) { client in
            let port = try #require(client.port)
            for _ in 1...20 { _ = try await client.post("/v1/acquire", Self.acquire("w-2")) }
            let connection = try RawConnection(port: port)
            try connection.send(Self.request(Self.acquire("w-2", wait: 60_000)))
            await timer.waitForPending(2)
            connection.close()
            try await signal.wait {
                String(buffer: try await client.execute(uri: "/metrics", method: .get).body).contains(#"weir_waits_total{outcome="cancelled"} 1"#)
            }
            #expect(timer.pending == 0, "its timers went with it")
            let metrics = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(metrics.contains("weir_waiting_calls 0"))
            // The window moves: the next call is admitted; nothing was charged for the one that left.
            timer.advance(to: Self.start + 60 * Self.second)
            let next = try await client.post("/v1/acquire", Self.acquire("w-2"))
            #expect(next.status == .ok)
            #expect(String(buffer: next.body).contains(#""remaining":19"#))
        }
    }

    @Test("max_wait_ms must be a whole number of milliseconds within the server's --max-wait-ms")
    func badValues() async throws {
        var configuration = testConfiguration()
        configuration.maxWait = 5 * Self.second
        let app = try await buildApplication(configuration: configuration)
        try await app.test(.live) { client in
            let over = try await client.post("/v1/acquire", Self.acquire("w-3", wait: 5_001))
            #expect(over.status == .badRequest)
            #expect(String(buffer: over.body).contains("must be at most 5000 (this server's --max-wait-ms), got 5001"))
            for bad in ["-1", "1.5", "\"10\"", "true", "18446744073709551616"] {
                let body = #"{"account": "w-3", "api": "text", "model": "MiniMax-M2", "max_wait_ms": \#(bad)}"#
                let answer = try await client.post("/v1/acquire", body)
                #expect(answer.status == .badRequest, "max_wait_ms \(bad)")
                #expect(String(buffer: answer.body).contains("max_wait_ms"), "max_wait_ms \(bad)")
            }
            #expect(try await client.post("/v1/acquire", Self.acquire("w-3", wait: 0)).status == .ok)
            #expect(try await client.post("/v1/acquire", Self.acquire("w-3", wait: 5_000)).status == .ok)
        }
    }

    @Test("through the gateway: x-weir-max-wait-ms waits for room and the call then goes upstream; the header is not forwarded; a bad value is 400")
    func gateway() async throws {
        try await GatewayHarness.run(config: GatewayHarness.chatConfig(requests: 1, tokens: 1_000_000)) { gateway in
            let key = try await gateway.key(for: "acme")
            let mock = ["x-mock-completion-tokens": "10"]
            #expect(try await gateway.send("/v1/text/chatcompletion_v2", body: GatewayTests.chat, key: key, headers: mock).status == 200)
            let refused = try await gateway.send(
                "/v1/text/chatcompletion_v2", body: GatewayTests.chat, key: key, headers: mock.merging(["x-weir-max-wait-ms": "1000"]) { $1 })
            #expect(refused.status == 429, "60 s to wait, 1 s allowed: refused at once")
            let waiting = Task {
                try await gateway.send(
                    "/v1/text/chatcompletion_v2", body: GatewayTests.chat, key: key,
                    headers: mock.merging(["x-weir-max-wait-ms": "60000"]) { $1 })
            }
            await gateway.timer.waitForPending(2)
            #expect(gateway.control.requestCount == 1, "nothing went upstream while it waited")
            gateway.timer.advance(to: gateway.clock.now() + 60 * Nanoseconds.perSecond)
            let answer = try await waiting.value
            #expect(answer.status == 200)
            #expect(gateway.control.requestCount == 2)
            let forwarded = gateway.control.requestsReceived.last?.headers ?? [:]
            #expect(forwarded["x-mock-completion-tokens"] == "10", "other headers go on: \(forwarded)")
            #expect(forwarded["x-weir-max-wait-ms"] == nil)
            let bad = try await gateway.send(
                "/v1/text/chatcompletion_v2", body: GatewayTests.chat, key: key, headers: ["x-weir-max-wait-ms": "soon"])
            #expect(bad.status == 400)
            #expect(bad.body.contains("x-weir-max-wait-ms"))
        }
    }

    @Test("a rule's max_wait: its calls wait when the caller does not say; max_wait_ms 0 says not to")
    func ruleDefault() async throws {
        let clock = ManualClock(start: Self.start)
        let timer = ManualWaitTimer(clock: clock)
        let directory = scratchDirectory()
        let configPath = directory + "/weir.yaml"
        try """
            tiers:
              - name: free
                recharge_threshold: 0
            rules:
              - name: chat
                api: text
                models: [MiniMax-M2]
                max_wait: 90s
                limits:
                  all: {requests: 1}
            """.write(toFile: configPath, atomically: true, encoding: .utf8)
        var configuration = testConfiguration(clock: clock, configPath: configPath, dataDirectory: directory)
        configuration.waitTimer = timer
        let app = try await buildApplication(configuration: configuration)
        try await app.test(.live) { client in
            let port = try #require(client.port)
            #expect(try await client.post("/v1/acquire", Self.acquire("r-1")).status == .ok)
            #expect(try await client.post("/v1/acquire", Self.acquire("r-1", wait: 0)).status == .tooManyRequests)
            let connection = try RawConnection(port: port)
            try connection.send(Self.request(Self.acquire("r-1")))
            await timer.waitForPending(2)
            timer.advance(to: Self.start + 60 * Self.second)
            let answer = try await connection.readAnswer()
            #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer)")
        }
    }

    @Test("the dashboard's snapshot says who is waiting")
    func dashboardShowsWaiting() async throws {
        let clock = ManualClock(start: Self.start)
        let timer = ManualWaitTimer(clock: clock)
        var configuration = testConfiguration(clock: clock)
        configuration.waitTimer = timer
        let app = try await buildApplication(configuration: configuration)
        try await app.test(.live) { client in
            let port = try #require(client.port)
            for _ in 1...20 { _ = try await client.post("/v1/acquire", Self.acquire("patient")) }
            let connection = try RawConnection(port: port)
            try connection.send(Self.request(Self.acquire("patient", wait: 60_000)))
            await timer.waitForPending(2)
            let snapshot = try await client.admin(.get, "/admin/v1/usage").json
            let accounts = try #require(snapshot["accounts"] as? [[String: Any]])
            let patient = try #require(accounts.first { $0["id"] as? String == "patient" })
            #expect(patient["waiting"] as? Int == 1)
            #expect((patient["sources"] as? [String])?.contains("waiting") == true)
            timer.advance(to: Self.start + 60 * Self.second)
            #expect(try await connection.readAnswer().hasPrefix("HTTP/1.1 200"))
            let after = try await client.admin(.get, "/admin/v1/usage").json
            let again = (after["accounts"] as? [[String: Any]])?.first { $0["id"] as? String == "patient" }
            #expect(again?["waiting"] as? Int == 0)
        }
    }
}
