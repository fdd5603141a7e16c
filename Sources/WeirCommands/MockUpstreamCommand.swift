import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NIOPosix
import WeirMockUpstream
import WeirServer

/// `weir mock-upstream`: a development stand-in for the model API (tests, demos,
/// benchmarks of the gateway). Not part of the gateway.
public struct MockUpstreamCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "mock-upstream",
        abstract: "Run a development stand-in for the model API (NOT the real API: replies are made up).",
        discussion: """
            Answers the gateway's paths (/v1/chat/completions, /v1/text/chatcompletion_v2, \
            /v1/t2a_v2, /v1/image_generation, /v1/video_generation, /v1/voice_clone, \
            /v1/voice_design, /v1/music_generation) in the real API's shapes, with usage \
            figures, SSE streams ending with a usage chunk, music that takes --music-ms, and \
            failures on request (--fail-every, or x-mock-* request headers: see README).
            """
    )

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0 picks a free one).")
    var port = 9090

    @Option(name: .customLong("music-ms"), help: "How long a music generation takes, in milliseconds.")
    var musicMilliseconds = 2000

    @Option(name: .customLong("completion-tokens"), help: "Tokens of a chat reply when the request sets no max_tokens.")
    var completionTokens = 64

    @Option(name: .customLong("fail-every"), help: "Answer every Nth request with --fail-status.")
    var failEvery: Int?

    @Option(name: .customLong("fail-status"), help: "HTTP status of the failures of --fail-every.")
    var failStatus = 500

    @Option(name: .customLong("event-interval-ms"), help: "Milliseconds between two events of a stream.")
    var eventIntervalMilliseconds = 0

    @Option(name: .customLong("api-key-file"), help: "Require Authorization: Bearer <the file's content> (401 otherwise).")
    var apiKeyFile: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    public init() {}

    public func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535") }
        guard musicMilliseconds >= 0 else { throw ValidationError("--music-ms must not be negative") }
        guard completionTokens >= 0 else { throw ValidationError("--completion-tokens must not be negative") }
        if let failEvery, failEvery < 1 { throw ValidationError("--fail-every must be at least 1") }
        guard (100...599).contains(failStatus) else { throw ValidationError("--fail-status must be an HTTP status (100-599)") }
        guard eventIntervalMilliseconds >= 0 else { throw ValidationError("--event-interval-ms must not be negative") }
    }

    public func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "weir-mock-upstream")
        logger.logLevel = level
        var apiKey: String?
        if let apiKeyFile {
            apiKey = try ServeCommand.readSecret(apiKeyFile, option: "--api-key-file")
        }
        let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: ServerConfiguration.availableCores)
        let configuration = MockUpstreamConfiguration(
            host: host, port: port, musicMilliseconds: musicMilliseconds, completionTokens: completionTokens,
            failEvery: failEvery, failStatus: failStatus, eventIntervalMilliseconds: eventIntervalMilliseconds,
            apiKey: apiKey, eventLoopGroup: eventLoops, logger: logger)
        let application = MockUpstream.build(configuration: configuration, control: MockUpstreamControl(recording: false))
        do {
            try await application.runService()
        } catch {
            try? await eventLoops.shutdownGracefully()
            throw error
        }
        try? await eventLoops.shutdownGracefully()
    }
}
