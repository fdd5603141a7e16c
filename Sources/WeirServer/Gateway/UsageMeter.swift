/// What one gateway call has used, as far as the gateway has seen: the usage the
/// upstream reported, and an estimate from the output that went by, for when no
/// report comes.
///
/// A value, fed by one task (the one streaming the response).
struct UsageMeter: Sendable {
    let metering: GatewayRoute.Metering
    let estimate: UsageEstimate
    /// The last usage the upstream reported (`usage.total_tokens`,
    /// `extra_info.usage_characters`, `metadata.success_count`).
    private(set) var reported: UInt64?
    /// Estimated tokens of the output seen so far (text only).
    private(set) var streamedOutput: UInt64 = 0

    init(metering: GatewayRoute.Metering, estimate: UsageEstimate) {
        self.metering = metering
        self.estimate = estimate
    }

    /// Reads one JSON document of the response (a whole body or one SSE event's data).
    mutating func observe(_ document: JSONValue) {
        if let usage = Self.reportedUsage(in: document, metering: metering) { reported = usage }
        if metering == .tokens, case .array(let choices)? = document["choices"] {
            for choice in choices {
                for container in ["delta", "message"] {
                    guard let part = choice[container] else { continue }
                    for field in ["content", "reasoning_content"] {
                        if case .string(let text)? = part[field] { streamedOutput &+= UsageEstimate.tokens(in: text) }
                    }
                }
            }
        }
    }

    /// Units to settle a call that ran to its end: the reported usage, else the input
    /// estimate plus the output seen (text), else the estimate.
    var completedUnits: UInt64 {
        if let reported { return reported }
        switch metering {
        case .tokens: return estimate.input &+ streamedOutput
        case .characters, .images: return estimate.total
        case .none: return 0
        }
    }

    /// Units to settle a call cut short after its response began: what was reported,
    /// else what was streamed (text), else the estimate (the work was done upstream).
    var interruptedUnits: UInt64 { completedUnits }

    /// The usage `document` reports for `metering`, if any.
    static func reportedUsage(in document: JSONValue, metering: GatewayRoute.Metering) -> UInt64? {
        switch metering {
        case .tokens:
            guard let usage = document["usage"], usage != .null else { return nil }
            if let total = usage["total_tokens"]?.nonNegativeInteger { return total }
            if let prompt = usage["prompt_tokens"]?.nonNegativeInteger,
                let completion = usage["completion_tokens"]?.nonNegativeInteger {
                return prompt &+ completion
            }
            return nil
        case .characters:
            return document["extra_info"]?["usage_characters"]?.nonNegativeInteger
        case .images:
            switch document["metadata"]?["success_count"] {
            case .number(let text)?, .string(let text)?: return UInt64(text)
            default: return nil
            }
        case .none:
            return nil
        }
    }
}
