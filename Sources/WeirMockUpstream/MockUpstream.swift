import Foundation
import Hummingbird
import Logging
import NIOCore

/// `weir mock-upstream`: a **development stand-in** for the model API, for tests, demos
/// and benchmarks of the gateway. It answers the gateway's paths in the shapes of the
/// real API and computes nothing real: replies are the word `tok` repeated.
///
/// | path | answers |
/// | --- | --- |
/// | `/v1/chat/completions` | OpenAI chat completion with `usage`; `stream: true`: SSE chunks, a usage chunk when `stream_options.include_usage`, `data: [DONE]` |
/// | `/v1/text/chatcompletion_v2` | the same in MiniMax's shape (`base_resp`); streams end with a chunk carrying `usage` |
/// | `/v1/t2a_v2` | hex "audio" and `extra_info.usage_characters` (characters of `text`); streams too |
/// | `/v1/image_generation` | `n` image URLs, `metadata.success_count` |
/// | `/v1/video_generation` | a `task_id` |
/// | `/v1/voice_clone`, `/v1/voice_design` | a voice |
/// | `/v1/music_generation` | audio after `musicMilliseconds` (or while the control holds) |
///
/// Usage it reports: prompt tokens are a quarter of the bytes of the messages' strings,
/// rounded up; completion tokens `max_completion_tokens` / `max_tokens`, else
/// `completionTokens`, else `x-mock-completion-tokens`. So Weir's estimates are never
/// below it (honest estimates).
///
/// Per-request headers:
/// - `x-mock-status: N`: answer N with an error body in the path's shape;
/// - `x-mock-completion-tokens: N`: reply length;
/// - `x-mock-no-usage: 1`: report no usage;
/// - `x-mock-reset-after-events: N`: stream N events, then drop the connection;
/// - `x-mock-stall-ms: N`: wait N ms (or while held) before answering;
/// - `x-mock-stall-after-events: N`: stream N events, then send nothing while the
///   control holds (at most 60 s);
/// - `x-mock-hold-after-events: N`: stream N events, then a `: keep-alive` comment every
///   10 ms while held, until the reader goes away (counted in `abandonedStreams`);
/// - `x-mock-event-interval-ms: N`, `x-mock-duration-ms: N` (music).
public enum MockUpstream {
    /// The application; run it with `runService()` or drive it with HummingbirdTesting.
    public static func build(
        configuration: MockUpstreamConfiguration, control: MockUpstreamControl = MockUpstreamControl()
    ) -> some ApplicationProtocol {
        let router = Router(context: BasicRequestContext.self)
        let handler = MockHandler(configuration: configuration, control: control)
        for path in MockHandler.paths {
            router.post(RouterPath(path)) { request, _ in try await handler.handle(request, path: path) }
        }
        router.get("/healthz") { _, _ in "ok" }
        let logger = configuration.logger
        var frameworkLogger = logger
        if frameworkLogger.logLevel > .debug { frameworkLogger.logLevel = max(frameworkLogger.logLevel, .warning) }
        return Application(
            router: router,
            configuration: ApplicationConfiguration(address: .hostname(configuration.host, port: configuration.port)),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.port
                logger.notice(
                    "weir mock-upstream (a development stand-in, not the model API) listening on http://\(configuration.host):\(port)")
            },
            eventLoopGroupProvider: configuration.eventLoopGroup.map { .shared($0) } ?? .singleton,
            logger: frameworkLogger
        )
    }
}

/// Answers one request of the mock.
struct MockHandler: Sendable {
    let configuration: MockUpstreamConfiguration
    let control: MockUpstreamControl

    static let paths = [
        "/v1/chat/completions", "/v1/text/chatcompletion_v2", "/v1/t2a_v2", "/v1/image_generation",
        "/v1/video_generation", "/v1/voice_clone", "/v1/voice_design", "/v1/music_generation",
    ]

    /// Per-request options from `x-mock-*` headers.
    struct Options {
        var status: Int?
        var completionTokens: Int?
        var noUsage = false
        var resetAfter: Int?
        var stallMilliseconds: Int?
        var stallAfter: Int?
        var holdAfter: Int?
        var eventInterval: Int
        var musicMilliseconds: Int
    }

    struct Failure: Error {}

    func handle(_ request: Request, path: String) async throws -> Response {
        var body = try await request.body.collect(upTo: 16 << 20)
        let bytes = body.readBytes(length: body.readableBytes) ?? []
        var headers: [String: String] = [:]
        for field in request.headers {
            let name = field.name.canonicalName
            headers[name] = headers[name].map { $0 + ", " + field.value } ?? field.value
        }
        let number = control.record(.init(path: request.head.path ?? path, headers: headers, body: bytes))
        func header(_ name: String) -> Int? { headers[name].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
        let options = Options(
            status: header("x-mock-status"), completionTokens: header("x-mock-completion-tokens"),
            noUsage: headers["x-mock-no-usage"] != nil, resetAfter: header("x-mock-reset-after-events"),
            stallMilliseconds: header("x-mock-stall-ms"), stallAfter: header("x-mock-stall-after-events"),
            holdAfter: header("x-mock-hold-after-events"),
            eventInterval: header("x-mock-event-interval-ms") ?? configuration.eventIntervalMilliseconds,
            musicMilliseconds: header("x-mock-duration-ms") ?? configuration.musicMilliseconds)
        let openAI = path == "/v1/chat/completions"

        if let key = configuration.apiKey, headers["authorization"] != "Bearer \(key)" {
            return error(status: 401, code: 1004, message: "mock upstream: invalid api key", openAI: openAI)
        }
        if let milliseconds = options.stallMilliseconds { await wait(milliseconds: milliseconds) }
        if let status = options.status {
            return error(status: status, code: 1000, message: "mock upstream failure (x-mock-status)", openAI: openAI)
        }
        if let every = configuration.failEvery, every > 0, number % every == 0 {
            return error(status: configuration.failStatus, code: 1000, message: "mock upstream failure (--fail-every)", openAI: openAI)
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else {
            return error(status: 400, code: 2013, message: "mock upstream: body is not a JSON object", openAI: openAI)
        }
        let stream = object["stream"] as? Bool == true
        switch path {
        case "/v1/chat/completions", "/v1/text/chatcompletion_v2":
            return chat(object, openAI: openAI, stream: stream, options: options)
        case "/v1/t2a_v2":
            return speech(object, stream: stream, options: options)
        case "/v1/image_generation":
            let count = (object["n"] as? Int) ?? 1
            let urls = (0..<count).map { "\"https://mock-upstream.invalid/image-\(number)-\($0).jpeg\"" }.joined(separator: ",")
            return json(#"{"id":"mock-\#(number)","data":{"image_urls":[\#(urls)]},"metadata":{"failed_count":"0","success_count":"\#(count)"},\#(Self.success)}"#)
        case "/v1/video_generation":
            return json(#"{"task_id":"mock-task-\#(number)",\#(Self.success)}"#)
        case "/v1/voice_clone":
            return json(#"{"input_sensitive":false,"input_sensitive_type":0,\#(Self.success)}"#)
        case "/v1/voice_design":
            return json(#"{"voice_id":"mock-voice-\#(number)","trial_audio":"49443303",\#(Self.success)}"#)
        default:  // music
            control.began()
            defer { control.ended() }
            await wait(milliseconds: options.musicMilliseconds)
            return json(#"{"data":{"audio":"4944330300","status":2},"extra_info":{"music_duration":\#(options.musicMilliseconds),"music_sample_rate":44100,"music_channel":2,"bitrate":256000,"music_size":5},"trace_id":"mock-\#(number)",\#(Self.success)}"#)
        }
    }

    static let success = #""base_resp":{"status_code":0,"status_msg":"success"}"#

    // MARK: - Text

    private func chat(_ object: [String: Any], openAI: Bool, stream: Bool, options: Options) -> Response {
        let model = object["model"] as? String ?? ""
        var promptBytes = 0
        for message in object["messages"] as? [[String: Any]] ?? [] {
            promptBytes += Self.stringBytes(message)
        }
        let prompt = (promptBytes + 3) / 4
        let asked = (object["max_completion_tokens"] as? Int) ?? (object["max_tokens"] as? Int)
        let completion = max(0, min(asked ?? Int.max, options.completionTokens ?? configuration.completionTokens))
        let usage = #"{"prompt_tokens":\#(prompt),"completion_tokens":\#(completion),"total_tokens":\#(prompt + completion)}"#
        let id = "chatcmpl-mock-\(UInt32.random(in: 0...UInt32.max))"
        let created = Int(Date().timeIntervalSince1970)
        if !stream {
            let content = String(repeating: "tok ", count: completion)
            let usageMember = options.noUsage ? "" : #","usage":\#(usage)"#
            let base = openAI ? "" : "," + Self.success
            return json(#"{"id":"\#(id)","object":"chat.completion","created":\#(created),"model":"\#(model)","choices":[{"index":0,"message":{"role":"assistant","content":"\#(content)"},"finish_reason":"stop"}]\#(usageMember)\#(base)}"#)
        }
        let includeUsage = ((object["stream_options"] as? [String: Any])?["include_usage"] as? Bool) == true
        var events: [String] = []
        let head = #"{"id":"\#(id)","object":"chat.completion.chunk","created":\#(created),"model":"\#(model)","choices":"#
        let nullUsage = openAI && includeUsage ? #","usage":null"# : ""
        var remaining = completion
        while remaining > 0 {
            let words = min(8, remaining)
            remaining -= words
            let content = String(repeating: "tok ", count: words)
            events.append(head + #"[{"index":0,"delta":{"role":"assistant","content":"\#(content)"},"finish_reason":null}]\#(nullUsage)}"#)
        }
        if openAI {
            events.append(head + #"[{"index":0,"delta":{},"finish_reason":"stop"}]\#(nullUsage)}"#)
            if includeUsage && !options.noUsage { events.append(head + #"[],"usage":\#(usage)}"#) }
            events.append("[DONE]")
        } else {
            let usageMember = options.noUsage ? "" : #","usage":\#(usage)"#
            events.append(head + #"[{"index":0,"delta":{},"finish_reason":"stop"}]\#(usageMember),\#(Self.success)}"#)
        }
        return sse(events, options: options)
    }

    static func stringBytes(_ value: Any) -> Int {
        switch value {
        case let text as String: text.utf8.count
        case let array as [Any]: array.reduce(0) { $0 + stringBytes($1) }
        case let object as [String: Any]: object.values.reduce(0) { $0 + stringBytes($1) }
        default: 0
        }
    }

    // MARK: - Speech

    private func speech(_ object: [String: Any], stream: Bool, options: Options) -> Response {
        let characters = (object["text"] as? String)?.count ?? 0
        let usage = options.noUsage ? "" : #","usage_characters":\#(characters)"#
        let extra = #""extra_info":{"audio_length":\#(characters * 60),"audio_sample_rate":32000,"audio_size":\#(characters * 8),"bitrate":128000,"word_count":\#(characters),"invisible_character_ratio":0\#(usage),"audio_format":"mp3","audio_channel":1}"#
        if !stream {
            return json(#"{"data":{"audio":"494433","status":2,"ced":""},\#(extra),"trace_id":"mock",\#(Self.success)}"#)
        }
        var events: [String] = []
        for _ in 0..<max(1, characters / 16) {
            events.append(#"{"data":{"audio":"494433","status":1,"ced":""},"trace_id":"mock",\#(Self.success)}"#)
        }
        events.append(#"{"data":{"audio":"","status":2,"ced":""},\#(extra),"trace_id":"mock",\#(Self.success)}"#)
        return sse(events, options: options)
    }

    // MARK: - Answers

    private func json(_ text: String, status: Int = 200) -> Response {
        Response(
            status: .init(code: status), headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    private func error(status: Int, code: Int, message: String, openAI: Bool) -> Response {
        if openAI {
            return json(#"{"error":{"message":"\#(message)","type":"server_error","param":null,"code":null}}"#, status: status)
        }
        return json(#"{"base_resp":{"status_code":\#(code),"status_msg":"\#(message)"}}"#, status: status)
    }

    /// An SSE response of `events` (each one `data:` line), paced and failing as asked.
    private func sse(_ events: [String], options: Options) -> Response {
        let control = self.control
        return Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: ResponseBody { writer in
                control.began()
                defer { control.ended() }
                do {
                    for (index, event) in events.enumerated() {
                        if index == options.resetAfter { throw Failure() }
                        if index == options.stallAfter { await wait(milliseconds: 0) }
                        if index == options.holdAfter {
                            while control.isHeld {
                                try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                                try await Task.sleep(for: .milliseconds(10))
                            }
                        }
                        if options.eventInterval > 0, index > 0 { try await Task.sleep(for: .milliseconds(options.eventInterval)) }
                        try await writer.write(ByteBuffer(string: "data: " + event + "\n\n"))
                    }
                } catch is Failure {
                    throw Failure()
                } catch {
                    control.abandon()
                    throw error
                }
                try await writer.finish(nil)
            })
    }

    /// Waits `milliseconds`, or while the control holds (at most 60 s), in 5 ms steps.
    private func wait(milliseconds: Int) async {
        let start = ContinuousClock.now
        let least = Duration.milliseconds(milliseconds)
        while true {
            let elapsed = ContinuousClock.now - start
            if elapsed >= .seconds(60) { return }
            if elapsed >= least && !control.isHeld { return }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }
}
