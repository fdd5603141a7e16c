import Foundation
import Testing
import WeirCore
@testable import WeirPolicy

@Suite struct ScalarSyntaxTests {
    @Test(arguments: [
        ("20", ScalarSyntax.IntegerValue.value(20)),
        ("1_000_000", .value(1_000_000)),
        ("18446744073709551615", .value(UInt64.max)),
        ("18446744073709551616", .overflow),
        ("99999999999999999999999999", .overflow),
        ("0", .value(0)),
        ("-0", .value(0)),
        ("-5", .negative),
        ("1.5", .notInteger),
        ("1e3", .notInteger),
        ("0x10", .notInteger),
        ("+5", .notInteger),
        ("_1", .notInteger),
        ("1__0", .notInteger),
        ("1_", .notInteger),
        ("", .notInteger),
        ("-", .notInteger),
        ("٣", .notInteger),
        ("lots", .notInteger),
    ])
    func integers(text: String, expected: ScalarSyntax.IntegerValue) {
        #expect(ScalarSyntax.integer(text) == expected)
    }

    static let second = Nanoseconds.perSecond
    static let durationCases: [(String, ScalarSyntax.DurationValue)] = [
        ("60s", ScalarSyntax.DurationValue.value(60 * second)),
        ("1m", .value(60 * second)),
        ("500ms", .value(500 * Nanoseconds.perMillisecond)),
        ("1h", .value(3_600 * second)),
        ("1d", .value(86_400 * second)),
        ("10 s", .value(10 * second)),
        ("250us", .value(250_000)),
        ("7ns", .value(7)),
        ("0s", .zero),
        ("213503d", .value(213_503 * 86_400 * second)),
        ("213504d", .overflow),
        ("99999999999999999999s", .overflow),
        ("60", .notDuration),
        ("s", .notDuration),
        ("-1s", .notDuration),
        ("1.5m", .notDuration),
        ("1 minute", .notDuration),
        ("1M", .notDuration),
        ("", .notDuration),
    ]

    @Test(arguments: durationCases)
    func durations(text: String, expected: ScalarSyntax.DurationValue) {
        #expect(ScalarSyntax.duration(text) == expected)
    }

    @Test(arguments: [
        ("0", ScalarSyntax.AmountValue.value(0)),
        ("0.01", .value(Decimal(string: "0.01")!)),
        ("1_000.50", .value(Decimal(string: "1000.5")!)),
        ("-0", .value(0)),
        ("-1", .negative),
        ("1.", .notNumber),
        (".5", .notNumber),
        ("1e5", .notNumber),
        ("1,000", .notNumber),
        ("ten", .notNumber),
        ("", .notNumber),
    ])
    func amounts(text: String, expected: ScalarSyntax.AmountValue) {
        #expect(ScalarSyntax.amount(text) == expected)
    }

    @Test func amountsAreWrittenPlainly() {
        #expect(ScalarSyntax.format(amount: Decimal(string: "0.01")!) == "0.01")
        #expect(ScalarSyntax.format(amount: 100) == "100")
        #expect(ScalarSyntax.format(amount: Decimal(string: "2500.50")!) == "2500.5")
    }

    @Test(arguments: [
        ("MiniMax-M2", "MiniMax-M2"),
        ("speech-2.6-hd", "speech-2.6-hd"),
        ("02", "\"02\""),
        ("yes", "\"yes\""),
        ("Null", "\"Null\""),
        ("a b", "\"a b\""),
        ("q\"\\", "\"q\\\"\\\\\""),
        ("\u{1}", "\"\\u0001\""),
    ])
    func quoting(text: String, expected: String) {
        #expect(ScalarSyntax.quoted(text) == expected)
    }

    @Test func shownValuesStayOnOneShortLine() {
        #expect(ScalarSyntax.shown("a\nb") == "a\\nb")
        #expect(ScalarSyntax.shown(String(repeating: "x", count: 100)) == String(repeating: "x", count: 39) + "…")
    }
}

extension ScalarSyntaxTests {
    @Test func longAmountsNeverTrap() {
        let forty = String(repeating: "9", count: 40)
        if case .value(let value) = ScalarSyntax.amount(forty) {
            #expect(value > 0)
        }
        #expect(ScalarSyntax.amount(forty + "9") == .notNumber)
    }
}
