import Foundation
import Testing
import WeirRedisTesting

/// The dashboard in a real browser: `weir serve` started from the built binary, and
/// `tests/browser/dashboard_test.py` driving headless Chromium through chromedriver
/// (Debian's `chromium` and `chromium-driver`, `selenium` from PyPI: all installed by
/// `scripts/install-deps --tests`). The script's checks are listed in its docstring;
/// it leaves a screenshot in the artifacts directory (`$WEIR_ARTIFACTS`, else
/// `/artifacts` when it exists, else `artifacts/` in the repository, which git ignores).
@Suite("Dashboard in headless Chromium", .serialized, .timeLimit(.minutes(3)))
struct DashboardBrowserTests {
    /// The repository's root, from this file's path.
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    static var artifacts: String {
        if let path = ProcessInfo.processInfo.environment["WEIR_ARTIFACTS"] { return path }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: "/artifacts", isDirectory: &isDirectory), isDirectory.boolValue,
            FileManager.default.isWritableFile(atPath: "/artifacts")
        {
            return "/artifacts"
        }
        return repository + "/artifacts"
    }

    /// The first executable named `name` on PATH or in `fallbacks`.
    static func locate(_ name: String, fallbacks: [String]) throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let candidates = path.split(separator: ":").map { "\($0)/\(name)" } + fallbacks
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw TestFailure("\(name) is not installed: run scripts/install-deps --tests")
        }
        return found
    }

    @Test("log in, watch traffic move the bars and the refusals chart, recharge, pin and override from the page")
    func browser() async throws {
        let python = try Self.locate("python3", fallbacks: ["/usr/bin/python3"])
        let chromium = try Self.locate("chromium", fallbacks: ["/usr/bin/chromium", "/usr/lib/chromium/chromium"])
        let chromedriver = try Self.locate("chromedriver", fallbacks: ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])

        let data = scratchDirectory()
        let token = "browser-\(UUID().uuidString)"
        let tokenFile = data + "/admin-token"
        try token.write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let server = try ServerProcess(arguments: ["serve", "--port", "0", "--data", data + "/registry", "--admin-token-file", tokenFile])
        let port = try await server.port()

        let screenshot = Self.artifacts + "/dashboard.png"
        try? FileManager.default.removeItem(atPath: screenshot)
        let run = try await ChildProcess.run(
            python,
            [
                Self.repository + "/tests/browser/dashboard_test.py", "--base-url", "http://127.0.0.1:\(port)",
                "--chromium", chromium, "--chromedriver", chromedriver, "--screenshot", screenshot,
            ],
            environment: ProcessInfo.processInfo.environment.merging(["WEIR_DASHBOARD_TOKEN": token]) { $1 })
        #expect(run.status == 0, "the browser checks failed:\n\(run.output)\(run.error)")
        #expect(run.output.contains("all checks passed"))
        #expect(FileManager.default.fileExists(atPath: screenshot), "no screenshot at \(screenshot)")
        #expect(!server.output.contains(token), "the admin token must never be logged")

        server.signal(SIGTERM)
        #expect(await server.exitStatus() == 0)
    }
}
