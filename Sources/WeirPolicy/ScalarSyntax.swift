import Foundation
import WeirCore

/// The textual forms of catalogue values, read and written: integers, amounts,
/// durations and YAML-safe strings. Pure functions; never trap on any input.
enum ScalarSyntax {
    // MARK: - Integers

    enum IntegerValue: Equatable {
        case value(UInt64)
        case negative
        case notInteger
        case overflow
    }

    /// A decimal integer: ASCII digits, optionally grouped with single underscores
    /// (`20_000_000`), optionally preceded by `-` (reported as `.negative`).
    static func integer(_ text: String) -> IntegerValue {
        var digits = Substring(text)
        var negative = false
        if digits.first == "-" {
            negative = true
            digits = digits.dropFirst()
        }
        guard isDigitGroups(digits) else { return .notInteger }
        if negative { return digits.allSatisfy { $0 == "0" || $0 == "_" } ? .value(0) : .negative }
        var value: UInt64 = 0
        for character in digits.utf8 where character != UInt8(ascii: "_") {
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(UInt64(character - UInt8(ascii: "0")))
            if overflow1 || overflow2 { return .overflow }
            value = sum
        }
        return .value(value)
    }

    /// Non-empty ASCII digits with underscores only between digits.
    private static func isDigitGroups(_ text: Substring) -> Bool {
        guard let first = text.utf8.first, let last = text.utf8.last, isDigit(first), isDigit(last) else { return false }
        var previousWasUnderscore = false
        for character in text.utf8 {
            if character == UInt8(ascii: "_") {
                if previousWasUnderscore { return false }
                previousWasUnderscore = true
            } else if isDigit(character) {
                previousWasUnderscore = false
            } else {
                return false
            }
        }
        return true
    }

    private static func isDigit(_ character: UInt8) -> Bool {
        character >= UInt8(ascii: "0") && character <= UInt8(ascii: "9")
    }

    // MARK: - Amounts

    enum AmountValue: Equatable {
        case value(Decimal)
        case negative
        case notNumber
    }

    /// A decimal amount such as `0`, `100`, `0.01` or `1_000.50`; a leading `-` is
    /// reported as `.negative`. No exponents, no thousands commas.
    static func amount(_ text: String) -> AmountValue {
        var body = Substring(text)
        var negative = false
        if body.first == "-" {
            negative = true
            body = body.dropFirst()
        }
        let parts = body.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.allSatisfy(isDigitGroups), body.count <= 40 else { return .notNumber }
        let plain = body.filter { $0 != "_" }
        guard let value = Decimal(string: plain, locale: Locale(identifier: "en_US_POSIX")), value.isFinite else {
            return .notNumber
        }
        if negative && value != 0 { return .negative }
        return .value(value)
    }

    /// The canonical text of `amount`: plain digits and a point, e.g. `0.01`.
    static func format(amount: Decimal) -> String {
        var value = amount
        return NSDecimalString(&value, Locale(identifier: "en_US_POSIX"))
    }

    // MARK: - Durations

    /// Duration units, largest first, with their length in nanoseconds.
    static let durationUnits: [(suffix: String, nanoseconds: UInt64)] = [
        ("d", 86_400 * Nanoseconds.perSecond),
        ("h", 3_600 * Nanoseconds.perSecond),
        ("m", 60 * Nanoseconds.perSecond),
        ("s", Nanoseconds.perSecond),
        ("ms", Nanoseconds.perMillisecond),
        ("us", 1_000),
        ("ns", 1),
    ]

    enum DurationValue: Equatable {
        case value(UInt64)
        case zero
        case notDuration
        case overflow
    }

    /// A duration: a whole number and a unit, `500ms`, `60s`, `1m`, `1h`, `1d` (also
    /// `ns` and `us`), optionally with a space between them. In nanoseconds.
    static func duration(_ text: String) -> DurationValue {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard let unitStart = trimmed.firstIndex(where: { !$0.isASCII || !$0.isNumber && $0 != "_" }) else {
            return .notDuration
        }
        let number = trimmed[..<unitStart]
        let suffix = trimmed[unitStart...].trimmingCharacters(in: .whitespaces)
        guard let unit = durationUnits.first(where: { $0.suffix == suffix }) else { return .notDuration }
        switch integer(String(number)) {
        case .value(0): return .zero
        case .value(let count):
            let (nanoseconds, overflow) = count.multipliedReportingOverflow(by: unit.nanoseconds)
            return overflow ? .overflow : .value(nanoseconds)
        case .overflow: return .overflow
        case .negative, .notInteger: return .notDuration
        }
    }

    /// The canonical text of `nanoseconds`: the largest unit that divides it exactly.
    static func format(duration nanoseconds: UInt64) -> String {
        for unit in durationUnits where nanoseconds % unit.nanoseconds == 0 && nanoseconds >= unit.nanoseconds {
            return "\(nanoseconds / unit.nanoseconds)\(unit.suffix)"
        }
        return "\(nanoseconds)ns"
    }

    /// The longest duration a window can have, in days (what fits in UInt64 nanoseconds).
    static let longestDuration = "\(UInt64.max / (86_400 * Nanoseconds.perSecond))d"

    // MARK: - Strings

    /// `text` as a YAML scalar that reads back as exactly `text`: plain when it is
    /// an unambiguous name (letters, digits, `-`, `_`, `.`, `/`, not starting with a
    /// digit or a sign, not a YAML keyword), double-quoted and escaped otherwise.
    /// Safe in block and flow context.
    static func quoted(_ text: String) -> String {
        isPlainSafe(text) ? text : doubleQuoted(text)
    }

    private static let keywords: Set<String> = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
    ]

    private static func isPlainSafe(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, first.properties.isAlphabetic && first.isASCII else {
            return false
        }
        guard !keywords.contains(text.lowercased()) else { return false }
        return text.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || "-_./".unicodeScalars.contains(scalar))
        }
    }

    private static func doubleQuoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\t": result += "\\t"
            case "\r": result += "\\r"
            case "\u{00}"..."\u{1F}", "\u{7F}"..."\u{9F}", "\u{2028}", "\u{2029}", "\u{FEFF}":
                result += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count)
                    + String(scalar.value, radix: 16, uppercase: true)
            default:
                result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    /// `text` for an error message: on one line, at most 40 characters.
    static func shown(_ text: String) -> String {
        var line = text.replacingOccurrences(of: "\r", with: "\\r").replacingOccurrences(of: "\n", with: "\\n")
        if line.count > 40 { line = String(line.prefix(39)) + "…" }
        return line
    }
}
