import WeirPolicy

/// One row of the gateway table (DESIGN.md, "Gateway paths"): a path of the model API,
/// the API it is limited as, where the model comes from and what is metered.
struct GatewayRoute: Sendable {
    /// How errors are worded on this path.
    enum Dialect: Sendable {
        /// MiniMax's own paths: `{"base_resp": {"status_code", "status_msg"}}`.
        case miniMax
        /// `/v1/chat/completions`: `{"error": {"message", "type", "param", "code"}}`.
        case openAI
    }

    /// What the units of a call are, before and after it runs.
    enum Metering: Sendable {
        /// Input tokens estimated from `messages` plus the output asked for; settled
        /// from `usage.total_tokens`.
        case tokens
        /// Characters of `text`; settled from `extra_info.usage_characters`.
        case characters
        /// Images asked for (`n`, default 1); settled from `metadata.success_count`.
        case images
        /// Nothing metered (requests and concurrency only).
        case none
    }

    var path: String
    var api: String
    /// Whether the body's `model` names the model; when not, the model is `""`.
    var modelFromBody: Bool
    var metering: Metering
    var dialect: Dialect

    /// The table.
    static let all: [GatewayRoute] = [
        GatewayRoute(path: "/v1/text/chatcompletion_v2", api: "text", modelFromBody: true, metering: .tokens, dialect: .miniMax),
        GatewayRoute(path: "/v1/chat/completions", api: "text", modelFromBody: true, metering: .tokens, dialect: .openAI),
        GatewayRoute(path: "/v1/t2a_v2", api: "t2a", modelFromBody: true, metering: .characters, dialect: .miniMax),
        GatewayRoute(path: "/v1/voice_clone", api: "voice-cloning", modelFromBody: false, metering: .none, dialect: .miniMax),
        GatewayRoute(path: "/v1/voice_design", api: "voice-design", modelFromBody: false, metering: .none, dialect: .miniMax),
        GatewayRoute(path: "/v1/video_generation", api: "video-generation", modelFromBody: true, metering: .none, dialect: .miniMax),
        GatewayRoute(path: "/v1/image_generation", api: "image-generation", modelFromBody: true, metering: .images, dialect: .miniMax),
        GatewayRoute(path: "/v1/music_generation", api: "music-generation", modelFromBody: true, metering: .none, dialect: .miniMax),
    ]
}
