import WeirCore

/// Durations printed the way Go's `time.Duration.String` prints them (`1s`, `6m0s`,
/// `59.5s`, `250ms`, `1h0m0s`), the convention of the `x-ratelimit-reset-*` headers of
/// the OpenAI-compatible ecosystem.
///
/// Weir rounds up to whole milliseconds first (a reset hint must never be early), so
/// the sub-second forms are always whole milliseconds.
public enum GoDuration {
    /// `nanoseconds` rounded up to whole milliseconds, in Go's notation.
    public static func string(nanoseconds: UInt64) -> String {
        string(milliseconds: Nanoseconds.millisecondsRoundedUp(nanoseconds))
    }

    /// Appends `nanoseconds`, rounded up to whole milliseconds, in Go's notation.
    public static func append(nanoseconds: UInt64, to bytes: inout [UInt8]) {
        let milliseconds = Nanoseconds.millisecondsRoundedUp(nanoseconds)
        if milliseconds < 1000 {
            JSONWriter.appendDecimal(milliseconds, to: &bytes)
            if milliseconds > 0 { bytes.append(UInt8(ascii: "m")) }
            bytes.append(UInt8(ascii: "s"))
        } else if milliseconds < 60_000 {
            JSONWriter.appendDecimal(milliseconds / 1000, to: &bytes)
            var fraction = milliseconds % 1000
            if fraction > 0 {
                bytes.append(UInt8(ascii: "."))
                var divisor: UInt64 = 100
                while fraction > 0 {
                    bytes.append(UInt8(ascii: "0") + UInt8(fraction / divisor))
                    fraction %= divisor
                    divisor /= 10
                }
            }
            bytes.append(UInt8(ascii: "s"))
        } else {
            bytes.append(contentsOf: string(milliseconds: milliseconds).utf8)
        }
    }

    /// `milliseconds` in Go's notation: `0s`, `250ms`, `1s`, `59.5s`, `6m0s`, `1h0m0s`.
    public static func string(milliseconds: UInt64) -> String {
        if milliseconds == 0 { return "0s" }
        if milliseconds < 1000 { return "\(milliseconds)ms" }
        let fraction = milliseconds % 1000
        let totalSeconds = milliseconds / 1000
        let seconds = totalSeconds % 60
        let totalMinutes = totalSeconds / 60
        let minutes = totalMinutes % 60
        let hours = totalMinutes / 60
        var text = ""
        if hours > 0 { text += "\(hours)h" }
        if hours > 0 || minutes > 0 { text += "\(minutes)m" }
        text += "\(seconds)"
        if fraction > 0 {
            var digits = String(fraction)
            digits = String(repeating: "0", count: 3 - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            text += "." + digits
        }
        return text + "s"
    }
}
