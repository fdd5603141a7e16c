import WeirPolicy

/// What a gateway call is expected to cost, worked out from its body before it is
/// forwarded (DESIGN.md, "Reserve, then settle").
///
/// **Accuracy.** No tokenizer: text is counted as one token per 4 ASCII bytes (rounded
/// up) plus one per non-ASCII character (a CJK character is about one token), plus 4
/// per message and 3 for the reply, which errs high for English and about right for
/// Chinese. The estimate is replaced by the upstream's reported usage when the call
/// settles, so an error only shifts when the budget is charged, not how much.
struct UsageEstimate: Sendable, Equatable {
    /// Estimated input units (tokens of the messages; characters; images).
    var input: UInt64
    /// Output units reserved: `max_completion_tokens` / `max_tokens`, else the rule's
    /// default output reservation (text only; 0 otherwise).
    var output: UInt64

    /// The units reserved at admission.
    var total: UInt64 { input.addingReportingOverflow(output).overflow ? UInt64.max : input + output }

    /// Tokens overhead of one chat message (role, separators).
    static let tokensPerMessage: UInt64 = 4
    /// Tokens that prime the reply.
    static let replyPriming: UInt64 = 3

    /// The estimate of a call of `metering` with `body`; `rule` gives the default output
    /// reservation.
    ///
    /// - Throws: `APIError` (400 naming the field) for a field of the wrong type.
    static func of(_ body: JSONValue, metering: GatewayRoute.Metering, rule: Rule) throws(APIError) -> UsageEstimate {
        switch metering {
        case .tokens:
            var input: UInt64 = replyPriming
            switch body["messages"] {
            case nil, .null?: break
            case .array(let messages)?:
                for message in messages {
                    input &+= tokensPerMessage &+ tokens(inStringsOf: message)
                }
            case let other?:
                throw .badRequest(field: "messages", "must be an array, got \(other.kind)")
            }
            for name in ["tools", "functions", "prompt"] {
                if let value = body[name] { input &+= tokens(inStringsOf: value) }
            }
            var asked = try JSONValue.optionalCount(body["max_completion_tokens"], "max_completion_tokens")
            if asked == nil { asked = try JSONValue.optionalCount(body["max_tokens"], "max_tokens") }
            return UsageEstimate(input: input, output: asked ?? rule.defaultOutputReservation ?? 0)
        case .characters:
            let text = try JSONValue.string(body["text"], "text", allowEmpty: true)
            return UsageEstimate(input: UInt64(text.count), output: 0)
        case .images:
            let count = try JSONValue.optionalCount(body["n"], "n") ?? 1
            return UsageEstimate(input: count, output: 0)
        case .none:
            return UsageEstimate(input: 0, output: 0)
        }
    }

    /// Estimated tokens of `text`: a quarter of its ASCII bytes, rounded up, plus one
    /// per non-ASCII character.
    static func tokens(in text: String) -> UInt64 {
        var ascii: UInt64 = 0
        var other: UInt64 = 0
        for byte in text.utf8 {
            if byte < 0x80 {
                ascii &+= 1
            } else if byte & 0xC0 != 0x80 {
                other &+= 1  // the first byte of a multi-byte character
            }
        }
        return (ascii + 3) / 4 &+ other
    }

    /// Estimated tokens of every string (member names of objects excluded) in `value`.
    static func tokens(inStringsOf value: JSONValue) -> UInt64 {
        switch value {
        case .string(let text): tokens(in: text)
        case .array(let elements): elements.reduce(0) { $0 &+ tokens(inStringsOf: $1) }
        case .object(let members): members.reduce(0) { $0 &+ tokens(inStringsOf: $1.1) }
        case .null, .bool, .number: 0
        }
    }
}
