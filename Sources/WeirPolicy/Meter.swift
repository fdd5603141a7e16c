/// What the `tokens` dimension of a rule counts, i.e. the unit of a call's `units`.
public enum Meter: String, Sendable, CaseIterable {
    /// Model tokens, input plus output (`usage.total_tokens`).
    case tokens
    /// Characters of input text (text to speech).
    case characters
    /// Images requested (`n`, default 1).
    case images
    /// Nothing is metered: the rule has no `tokens` limit.
    case none
}
