import Foundation

extension Catalogue {
    /// The default catalogue (DESIGN.md, "The default catalogue"): figures per account
    /// per minute, sliding window, per-model budgets.
    ///
    /// | API | models | tier | RPM | TPM | CONN |
    /// | --- | --- | --- | --- | --- | --- |
    /// | text | MiniMax-M2 | all | 20 | 1,000,000 | |
    /// | text | MiniMax-M2-Stable | free | 20 | 1,000,000 | |
    /// | text | MiniMax-M2-Stable | paid | 500 | 20,000,000 | |
    /// | t2a | speech-2.6-turbo, speech-2.6-hd, speech-02-turbo, speech-02-hd | all | 60 | 20,000 (characters) | |
    /// | voice-cloning | (any) | all | 60 | | |
    /// | voice-design | (any) | all | 20 | | |
    /// | video-generation | MiniMax-Hailuo-2.3, MiniMax-Hailuo-2.3-Fast, MiniMax-Hailuo-02 | all | 5 | | |
    /// | image-generation | image-01 | all | 10 | 60 (images) | |
    /// | music-generation | Music-2.0 | all | 120 | | 20 |
    ///
    /// Tiers: `free` (threshold 0) and `paid` (threshold 0.01: any recharge upgrades).
    /// Text rules reserve 4096 output tokens when a call does not say.
    public static let builtIn = Catalogue(
        tiers: [
            Tier(name: "free", rechargeThreshold: 0),
            Tier(name: "paid", rechargeThreshold: Decimal(sign: .plus, exponent: -2, significand: 1)),
        ],
        rules: [
            Rule(
                name: "text-minimax-m2", api: "text", models: ["MiniMax-M2"],
                meter: .tokens, defaultOutputReservation: 4096,
                limits: [TierLimits(tier: "all", requests: 20, tokens: 1_000_000)]
            ),
            Rule(
                name: "text-minimax-m2-stable", api: "text", models: ["MiniMax-M2-Stable"],
                meter: .tokens, defaultOutputReservation: 4096,
                limits: [
                    TierLimits(tier: "free", requests: 20, tokens: 1_000_000),
                    TierLimits(tier: "paid", requests: 500, tokens: 20_000_000),
                ]
            ),
            Rule(
                name: "t2a", api: "t2a",
                models: ["speech-2.6-turbo", "speech-2.6-hd", "speech-02-turbo", "speech-02-hd"],
                meter: .characters,
                limits: [TierLimits(tier: "all", requests: 60, tokens: 20_000)]
            ),
            Rule(
                name: "voice-cloning", api: "voice-cloning",
                limits: [TierLimits(tier: "all", requests: 60)]
            ),
            Rule(
                name: "voice-design", api: "voice-design",
                limits: [TierLimits(tier: "all", requests: 20)]
            ),
            Rule(
                name: "video-generation", api: "video-generation",
                models: ["MiniMax-Hailuo-2.3", "MiniMax-Hailuo-2.3-Fast", "MiniMax-Hailuo-02"],
                limits: [TierLimits(tier: "all", requests: 5)]
            ),
            Rule(
                name: "image-generation", api: "image-generation", models: ["image-01"],
                meter: .images,
                limits: [TierLimits(tier: "all", requests: 10, tokens: 60)]
            ),
            Rule(
                name: "music-generation", api: "music-generation", models: ["Music-2.0"],
                limits: [TierLimits(tier: "all", requests: 120, concurrency: 20)]
            ),
        ]
    )
}
